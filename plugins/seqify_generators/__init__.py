"""Built-in generic generators: a causal any-order transformer and a masked any-order one."""

from seqify.hookspecs import hookimpl

_P = "seqify_generators"


@hookimpl
def register_generators(register):
    register(
        "causal",
        f"{_P}.causal:CausalTransformer",
        "Causal transformer with target-aware (sigma-GPT / RAR) positions: any order, KV cache, variable length.",
    )
    register(
        "masked",
        f"{_P}.masked:MaskedTransformer",
        "Bidirectional masked any-order transformer: blocks, adaptive orders, exact scoring by unmasking.",
    )
