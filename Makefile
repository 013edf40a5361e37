# Two entry points (see README): `make run` and `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test setup clean

# Debian packages: chromium (the demo's browser tests), ffmpeg (making .y4m fake-camera clips) and
# the GL libraries MediaPipe loads.
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBS   := $(strip $(foreach p,chromium ffmpeg,$(if $(shell command -v $(p)),,$(p))))
# Shared libraries MediaPipe's native code links (realtime/face.py, SYSTEM_LIBRARIES); headless
# servers often lack them. Only where ldconfig can tell.
DEBS   += $(shell for p in libEGL.so.1:libegl1 libGLESv2.so.2:libgles2; do \
            /sbin/ldconfig -p >/dev/null 2>&1 || break; \
            /sbin/ldconfig -p | grep -qF "$${p%%:*}" || echo "$$p" | cut -d: -f2; done)
DEBS   := $(strip $(DEBS))

$(STAMP): pyproject.toml Makefile
	$(if $(DEBS),$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends $(DEBS))
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: this exact CPU wheel lies on the machine; any other downloads GBs.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# The live spotter: on the bundled sample (no camera or display needed), or `make run DEVICE=0`.
run: $(STAMP)
ifdef DEVICE
	$(PY) -m realtime.cam --device $(DEVICE)
else
	$(PY) -m realtime.cam --source samples/pyfeat_single_face.mp4 --headless --events runs/sample_events.jsonl
endif

test: $(STAMP)
	$(PY) -m pytest

clean:
	rm -rf $(VENV) runs build *.egg-info
