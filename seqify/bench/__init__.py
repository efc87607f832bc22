"""One benchmark cell: resolve -> prepare data -> train -> evaluate -> write.

The pipeline, one module a stage:

- :mod:`seqify.bench.request`: :class:`RunSettings` (what every command shares),
  :class:`BenchRequest`, :class:`BenchResult`, :class:`Reporter`;
- :mod:`seqify.bench.resolve`: cell resolution (every component looked up, configured
  and checked before any data loads; the one way a component is built);
- :mod:`seqify.bench.prepare`: data preparation (load, fit, restore or load the
  tokenizer, tokenize, cache);
- :mod:`seqify.bench.stages`: the evaluation stages (modelability, reconstruction,
  samples and metrics, diagnostics) and the model a cell trains;
- :mod:`seqify.bench.run`: orchestration, :func:`run_bench` behind ``seqify bench``;
- :mod:`seqify.bench.sample`: :func:`run_sample` behind ``seqify sample``.
"""

from seqify.bench.prepare import Prepared, decode_all, fit_tokenizer, load_tokenizer_state, prepare_data
from seqify.bench.request import BenchRequest, BenchResult, Reporter, RunSettings, request_dict
from seqify.bench.resolve import (
    Cell,
    build_component,
    check_applicable,
    check_spec,
    default_generator,
    generator_settings,
    known_spec,
    pick_dataset,
    pick_device,
    resolve_cell,
    train_signature,
)
from seqify.bench.run import TOKENIZER_STATE, TRAIN_STATE, run_bench
from seqify.bench.sample import run_sample
from seqify.bench.stages import (
    build_model,
    completion_probe,
    draw_order,
    evaluate_model,
    generate_and_measure,
    measure_reconstruction,
    score_test,
)
from seqify.errors import SeqifyError

__all__ = [
    "RunSettings", "BenchRequest", "BenchResult", "Reporter", "run_bench", "run_sample", "resolve_cell",
    "check_applicable", "evaluate_model", "SeqifyError", "build_component", "default_generator", "TRAIN_STATE",
    "Cell", "Prepared", "prepare_data", "fit_tokenizer", "decode_all", "build_model", "pick_device",
    "pick_dataset", "generator_settings", "train_signature", "check_spec", "known_spec", "completion_probe",
    "draw_order", "generate_and_measure", "measure_reconstruction", "score_test", "request_dict",
    "load_tokenizer_state", "TOKENIZER_STATE",
]
