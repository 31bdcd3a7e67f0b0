#!/usr/bin/env bash
# Gather, into .whl/, the wheels that benchmarks/gpu_check.sh installs on a CUDA
# machine with no network (Python 3.12, its own torch, numpy, matplotlib, pytest and
# hypothesis): tinyformer itself, the notebook tools that run the chapters, and
# expecttest for PyTorch's OpInfo samples. Versions follow requirements.txt; torch
# and what that machine already has are never carried.
# Usage (here, with network): bash benchmarks/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
PIP=${PIP:-.venv/bin/python -m pip}
wanted="jupytext nbclient nbformat ipykernel expecttest num2words"
# Already on the machine (its image's package list): shadowing them gains nothing.
present="torch numpy matplotlib pytest hypothesis pyyaml attrs packaging psutil
  markdown-it-py mdurl pygments typing-extensions sortedcontainers pluggy iniconfig
  six python-dateutil pillow fonttools kiwisolver cycler contourpy pyparsing
  filelock fsspec jinja2 markupsafe networkx sympy mpmath setuptools tqdm"
grep -v '^#' requirements.txt | sed 's/ *#.*//' | grep -v '^torch==' > /tmp/gpu-constraints.txt
$PIP download --quiet --disable-pip-version-check --only-binary=:all: \
  --python-version 3.12 --implementation cp --abi cp312 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -c /tmp/gpu-constraints.txt -d .whl $wanted 2>&1 | grep -v "^WARNING: Location" || true
for name in $present; do
  pattern=$(echo "$name" | tr '-' '_')
  rm -f .whl/"$pattern"-[0-9]*.whl .whl/"$name"-[0-9]*.whl
  find .whl -iname "${pattern}-[0-9]*.whl" -delete
done
$PIP wheel --quiet --disable-pip-version-check --no-deps -w .whl . 2>&1 \
  | grep -v "^WARNING: Location" || true
ls .whl | sed 's/-py3.*//; s/-cp3.*//' | tr '\n' ' '
echo; du -sh .whl
