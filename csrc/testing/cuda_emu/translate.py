"""Rewrites a .cu file into C++ for the CUDA emulator (cuda_emu.h); tests only.

Two rewrites, both keeping the line count so compiler messages point at the .cu lines:
  name<T><<<grid, block[, shared[, stream]]>>>(args)  ->  ::cuda_emu::launch(::cuda_emu::LaunchConfig(grid, block, ...), name<T>, args)
  extern __shared__ T name[];                          ->  T* name = reinterpret_cast<T*>(::cuda_emu::dynamic_shared());
Usage: python translate.py in.cu out.cpp
"""
import re
import sys

LAUNCH = re.compile(r"([A-Za-z_][\w:]*(?:<[^<>;{}]*>)?)(\s*)<<<(.*?)>>>(\s*)\((\s*)(\)?)", re.S)
EXTERN_SHARED = re.compile(r"extern\s+__shared__\s+(?:__align__\(\s*\d+\s*\)\s+)?([\w:]+)\s+(\w+)\s*\[\s*\]\s*;")


def translate(src: str, path: str) -> str:
    def launch(m):
        name, ws1, cfg, ws2, ws3, empty = m.groups()
        keep = "".join(c for c in ws1 + ws2 + ws3 if c == "\n")  # the line count must not change
        head = f"::cuda_emu::launch(::cuda_emu::LaunchConfig({cfg}), {name}"
        return head + (")" if empty else ", ") + keep

    out, n = LAUNCH.subn(launch, src)
    if "<<<" in out:
        raise SystemExit(f"{path}: a kernel launch the emulator's translator does not understand")
    out = EXTERN_SHARED.sub(r"\1* \2 = reinterpret_cast<\1*>(::cuda_emu::dynamic_shared());", out)
    if re.search(r"extern\s+__shared__", out):
        raise SystemExit(f"{path}: an extern __shared__ declaration the translator does not understand")
    assert out.count("\n") == src.count("\n")
    return f'#line 1 "{path}"\n' + out


if __name__ == "__main__":
    src_path, dst_path = sys.argv[1], sys.argv[2]
    with open(src_path) as f:
        text = f.read()
    with open(dst_path, "w") as f:
        f.write(translate(text, src_path))
