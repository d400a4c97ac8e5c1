"""Build the compiled core (ecnn/_core); everything else is in pyproject.toml.

It needs a C11 compiler and the Python headers. Extra flags come from the
environment as usual (``CFLAGS``, for example a sanitizer build).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ecnn._core._rc",
            sources=["ecnn/_core/_rcmodule.c", "ecnn/_core/rc.c"],
            depends=["ecnn/_core/rc.h", "ecnn/_core/pyints.h"],
            extra_compile_args=["-std=c11", "-O2"],
        ),
        Extension(
            "ecnn._core._rce",
            sources=["ecnn/_core/_rcemodule.c", "ecnn/_core/rce.c"],
            depends=["ecnn/_core/rce.h", "ecnn/_core/rc.h", "ecnn/_core/pyints.h"],
            extra_compile_args=["-std=c11", "-O2"],
        ),
        Extension(
            "ecnn._core._rans",
            sources=["ecnn/_core/_ransmodule.c", "ecnn/_core/rans.c"],
            depends=["ecnn/_core/rans.h", "ecnn/_core/pyints.h"],
            extra_compile_args=["-std=c11", "-O2"],
        ),
        Extension(
            "ecnn._core._hist",
            sources=["ecnn/_core/_histmodule.c", "ecnn/_core/hist.c"],
            depends=["ecnn/_core/hist.h", "ecnn/_core/pyints.h"],
            # -O3 vectorizes the integer sums (exact in any order); floating-point sums
            # are never reordered without -ffast-math, so the estimates stay the same.
            extra_compile_args=["-std=c11", "-O3"],
        ),
        Extension(
            "ecnn._core._bits",
            sources=["ecnn/_core/_bitsmodule.c", "ecnn/_core/bits.c", "ecnn/_core/scale.c", "ecnn/_core/crc.c"],
            depends=["ecnn/_core/bits.h", "ecnn/_core/scale.h", "ecnn/_core/crc.h", "ecnn/_core/pyints.h"],
            # -O3 vectorizes the integer-to-float loops of scale.c (each element is one IEEE
            # conversion and multiplication, in any order: the same bits).
            extra_compile_args=["-std=c11", "-O3"],
        ),
    ]
)
