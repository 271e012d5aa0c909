#!/usr/bin/env bash
# Set up edgekd on a fresh Debian machine: system packages, a venv in .venv, pinned dependencies.
# Idempotent: re-running it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages not yet installed, among those named.
missing_debs() {
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || echo "$pkg"
  done
}

if ! command -v espeak-ng >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null
  else
    echo "edgekd: espeak-ng is missing; install it with: sudo apt-get install espeak-ng" >&2
    exit 1
  fi
fi

# More offline voices from Debian main (flite; festival with its lexicons and three English voices), and
# wamerican's word list, where a wake-word build finds the phrase's near-misses (edgekd.words.near_misses).
# Optional: an engine whose package is absent says so when a recipe asks for its voices.
VOICE_DEBS=(flite festival festlex-cmu festlex-poslex festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
  wamerican)
mapfile -t missing < <(missing_debs "${VOICE_DEBS[@]}")
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "edgekd: optional voice packages missing: sudo apt-get install ${missing[*]}" >&2
  fi
fi

# Opt-in (EDGEKD_NONFREE_VOICES=1): RHVoice, MBROLA and SVOX pico voices from Debian contrib/non-free.
# Their licences restrict redistribution, so they are never installed by default. They come through a
# private apt configuration (its own sources, lists and cache) so /etc/apt is never touched.
NONFREE_DEBS=(rhvoice rhvoice-english mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 libttspico-utils)
if [ "${EDGEKD_NONFREE_VOICES:-0}" = 1 ]; then
  mapfile -t missing < <(missing_debs "${NONFREE_DEBS[@]}")
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ] || [ ! -f /etc/apt/sources.list.d/debian.sources ]; then
      echo "edgekd: EDGEKD_NONFREE_VOICES=1 needs root and /etc/apt/sources.list.d/debian.sources" >&2
      exit 1
    fi
    apt_dir=${EDGEKD_APT_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/edgekd/apt-nonfree}
    mkdir -p "$apt_dir/sources.list.d" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
    sed -E 's/^Components:.*/Components: main contrib non-free/' /etc/apt/sources.list.d/debian.sources \
      >"$apt_dir/sources.list.d/debian.sources"
    cat >"$apt_dir/apt.conf" <<EOF
Dir::Etc::SourceList "/dev/null";
Dir::Etc::SourceParts "$apt_dir/sources.list.d";
Dir::State::Lists "$apt_dir/lists";
Dir::Cache "$apt_dir/cache";
APT::Sandbox::User "root";
EOF
    APT_CONFIG="$apt_dir/apt.conf" apt-get update -qq
    APT_CONFIG="$apt_dir/apt.conf" DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# A C++ toolchain: `edgekd stream`'s INT8 engine compiles its kernels with it (torch.compile; without it
# the engine runs eagerly, ~5x slower), and the firmware host tests build firmware_stub with cmake.
mapfile -t missing < <(missing_debs g++ cmake)
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian chromium: only the report.html browser test needs it (skipped, with a reason, where it is absent).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

# Built-in pools of real recorded speech (unlabelled) from Debian main: `builtin:debian-speech` for
# `data.unlabeled` and wake-word training, and the held-out asterisk prompts in four languages that wake words
# calibrate and report on (edgekd/data/real_pool.py: sources, licences, which files are speech). The
# packages are downloaded and unpacked into the project, never installed (nothing lands in /usr, no
# maintainer script runs), and only their sound files and copyright notices are kept: tuxpaint's
# stamps are mostly images, so it keeps just the spoken descriptions. `apt-get download` needs no root,
# only current apt lists. Optional: without the pool, a build that names it says how to get it.
REAL_POOL=${EDGEKD_REAL_POOL:-.cache/real-speech}
REAL_SPEECH_DEBS=(asterisk-core-sounds-en-wav fillets-ng-data-cs fillets-ng-data-nl tuxpaint-stamps-default
  asterisk-core-sounds-es-wav asterisk-core-sounds-fr-wav asterisk-core-sounds-it-wav asterisk-core-sounds-ru-wav)
REAL_SPEECH_MARKER=.edgekd-unpacked  # written last; edgekd treats a folder without it as absent

# Unpack one package's sound files into $REAL_POOL/PKG, atomically (a stage folder renamed into place).
fetch_real_speech() {
  local pkg=$1 keep='*' stage deb ok=1
  [ "$pkg" = tuxpaint-stamps-default ] && keep='*_desc*'
  [ -f "$REAL_POOL/$pkg/$REAL_SPEECH_MARKER" ] && return 0
  rm -rf "$REAL_POOL/.$pkg".??????  # what an interrupted run left
  mkdir -p "$REAL_POOL" && stage=$(mktemp -d "$REAL_POOL/.$pkg.XXXXXX") || return 1
  if (cd "$stage" && apt-get -qq -o APT::Sandbox::User="$(id -un)" download "$pkg") \
    && deb=$(ls "$stage"/*.deb) && mkdir "$stage/root" \
    && dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$stage/root" --wildcards './usr/share/doc/*' "$keep" \
    && dpkg-deb -f "$deb" Package Version >"$stage/root/$REAL_SPEECH_MARKER"; then
    rm -rf "${REAL_POOL:?}/$pkg" "$REAL_POOL/.edgekd-16k/$pkg" && mv "$stage/root" "$REAL_POOL/$pkg" && ok=0
  fi
  rm -rf "$stage"
  return $ok
}

failed=()
for pkg in "${REAL_SPEECH_DEBS[@]}"; do
  fetch_real_speech "$pkg" || failed+=("$pkg")
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "edgekd: real-speech pool incomplete, could not download ${failed[*]} (needs the Debian archive" \
    "and current apt lists: as root run apt-get update, then re-run scripts/setup.sh); builds that do" \
    "not use data.unlabeled=builtin:... are unaffected" >&2
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: any other route lets pip pick a CUDA build of several GB.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -c requirements/constraints.txt -e ".[dev]"
# The long sources decoded once to 16 kHz float32 twins (~1.8 GB beside the pool's 0.4 GB): every build's
# stream stage reads six hours of them, and decoding them there cost ~70 CPU seconds a build. Resumable.
EDGEKD_REAL_POOL=$REAL_POOL .venv/bin/python -m edgekd.data.real_pool
echo "edgekd: environment ready in .venv (activate with: source .venv/bin/activate)"
