"""Built-in plugin: the ``learned`` orderer (LO-ARM-style learned generation order).

Modules: :mod:`~seqify_learned.options` (settings), :mod:`~seqify_learned.base` (what
the two wrappers share: the variational posterior, scoring and sampling entry points),
:mod:`~seqify_learned.model` (the wrapper of the masked generator, LO-ARM's estimator),
:mod:`~seqify_learned.causal_model` (the wrapper of the causal generator, a whole-order
reward), :mod:`~seqify_learned.plackett_luce` (the posterior's order distribution),
:mod:`~seqify_learned.posterior` (its networks), :mod:`~seqify_learned.estimators` (the
ELBO estimators), :mod:`~seqify_learned.orderer` (the TrainableOrderer the runner
calls), :mod:`~seqify_learned.diagnostics` (order profiles and pictures). Nothing heavy is imported here: the registry holds "module:Class" strings.
"""

from seqify.hookspecs import hookimpl


@hookimpl
def register_orderers(register):
    register(
        "learned",
        "seqify_learned.orderer:LearnedOrder",
        "Learned order policy trained with the generator (LO-ARM: variational bound, Plackett-Luce "
        "posterior; masked: exact next-slot expectation, RLOO on the prefix; causal: whole orders scored in one "
        "pass, RLOO on the whole order).",
    )
