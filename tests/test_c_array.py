"""The firmware C array reproduces the model bytes exactly and is aligned for TFLite Micro."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from edgekd.export.c_array import write_c_array


def test_c_array_compiles_and_round_trips(tmp_path: Path) -> None:
    model = bytes(range(256)) * 3 + b"\x07"
    write_c_array(model, tmp_path)
    cc = (tmp_path / "model_data.cc").read_text()
    assert "alignas(16) const uint8_t g_model[]" in cc
    values = bytes(int(v, 16) for v in re.findall(r"0x([0-9a-f]{2})", cc))
    assert values == model
    main = tmp_path / "main.cc"
    main.write_text(
        '#include "model_data.h"\n#include <cstdio>\n#include <cstdint>\n'
        'int main() { std::printf("%zu %d %d\\n", g_model_len, (int)g_model[1], '
        "(int)(reinterpret_cast<uintptr_t>(g_model) % 16)); }\n"
    )
    exe = tmp_path / "a.out"
    subprocess.run(
        [
            "g++",
            "-std=c++17",
            "-o",
            str(exe),
            str(main),
            str(tmp_path / "model_data.cc"),
            "-I",
            str(tmp_path),
        ],
        check=True,
    )
    assert subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split() == [
        str(len(model)),
        "1",
        "0",
    ]
