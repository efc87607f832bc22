"""Example plugin: registers the 'center-out' orderer and the 'bag-of-slots' generator.
Kept light: no torch import here (the registry holds "module:Class" strings)."""

from seqify.hookspecs import hookimpl


@hookimpl
def register_orderers(register):
    register("center-out", "seqify_center_out.orderer:CenterOut", "Slots nearest the middle of the coordinate grid first.")


@hookimpl
def register_generators(register):
    register("bag-of-slots", "seqify_center_out.generator:BagOfSlots",
             "Each slot from the mean embedding of the known slots (an MLP; its own settings schema).")
