"""Example plugin: registers the 'center-out' orderer. Kept light: no torch import here."""

from seqify.hookspecs import hookimpl


@hookimpl
def register_orderers(register):
    register("center-out", "seqify_center_out.orderer:CenterOut", "Slots nearest the middle of the coordinate grid first.")
