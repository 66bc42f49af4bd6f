"""Builds medseg_ext._C with CMake (the pybind11 CMake-extension pattern).

Environment:
  MEDSEG_EXT_CUDA        auto (default) | on | off   build the CUDA kernels when nvcc is found
  MEDSEG_EXT_CUDA_ARCHS  e.g. "80;90" (default) or "90"
  MEDSEG_EXT_BUILD_JOBS  parallel compile jobs (default: CPU count)
  MEDSEG_EXT_CPU_AVX512  on (default) | off          also build the AVX-512 variant of the CPU kernels
"""
import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        import pybind11

        ext_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(self.build_temp).resolve() / ext.name
        build_dir.mkdir(parents=True, exist_ok=True)
        cuda = os.environ.get("MEDSEG_EXT_CUDA", "auto").lower()
        if cuda not in ("auto", "on", "off"):
            raise ValueError(f"MEDSEG_EXT_CUDA must be auto, on or off, got {cuda!r}")
        archs = os.environ.get("MEDSEG_EXT_CUDA_ARCHS", "80;90")
        avx512 = os.environ.get("MEDSEG_EXT_CPU_AVX512", "on").lower()
        if avx512 not in ("on", "off"):
            raise ValueError(f"MEDSEG_EXT_CPU_AVX512 must be on or off, got {avx512!r}")
        config = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={ext_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DMEDSEG_EXT_CUDA={cuda}",
            f"-DMEDSEG_EXT_CUDA_ARCHS={archs}",
            f"-DMEDSEG_EXT_CPU_AVX512={'ON' if avx512 == 'on' else 'OFF'}",
        ]
        jobs = os.environ.get("MEDSEG_EXT_BUILD_JOBS", str(os.cpu_count() or 1))
        subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_dir), *config], check=True)
        subprocess.run(["cmake", "--build", str(build_dir), "-j", jobs], check=True)


setup(ext_modules=[CMakeExtension("medseg_ext._C")], cmdclass={"build_ext": CMakeBuild})
