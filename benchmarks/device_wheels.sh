#!/usr/bin/env bash
# The wheels a lent GPU machine lacks, fetched here (it has no network) for its Python 3.12.
#
#   bash benchmarks/device_wheels.sh [DIR]     # default .whl (ignored by git; ~11 MB)
#
# The machine's image already holds JAX, Flax, Optax, Orbax, NumPy, scikit-learn, scikit-image,
# Pillow, matplotlib, tqdm, absl, etils, protobuf, pyarrow, psutil and safetensors (its package
# list: /work/.library/device/KINDS.md). What is left of setup.cfg's install_requires, with the
# dependencies those bring that the image lacks, is pinned below to the versions CI installs;
# PyAV (videos only) and the oneDNN wheels (CPU only) stay behind. benchmarks/on_device.sh
# installs them there; benchmarks/README.md "On a GPU" has the whole procedure.
set -euo pipefail
DIR=${1:-.whl}
WHEELS=(
  tensorflow-datasets==4.9.10 tensorflow-metadata==1.21.0 googleapis-common-protos==1.76.0
  array-record==0.8.6 grain==0.2.18 dm-tree==0.1.10 ml-collections==1.1.0 tensorboardx==2.6.5
  importlib-resources==7.1.0 immutabledict==4.3.1 simple-parsing==0.1.9 docstring-parser==0.18.0
  termcolor==3.3.0 toml==0.10.2 portpicker==1.6.0
)
SDISTS=(promise==2.3)  # published as a source archive only: built here into a pure-Python wheel
PLATFORMS=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  PLATFORMS+=(--platform "${p}_x86_64")
done
mkdir -p "$DIR"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d "$DIR" "${WHEELS[@]}"
python3 -m pip wheel -q --no-deps -w "$DIR" "${SDISTS[@]}"
echo "$(ls "$DIR" | wc -l) wheels, $(du -sh "$DIR" | cut -f1) in $DIR"
