"""The few BLAS/LAPACK routines of the cell score's ridge, called without holding Python's GIL.

scipy's `scipy.linalg.lapack` and `blas` wrappers hold the GIL while the routine runs, so two threads fitting
two folds' ridges take turns instead of running together. scipy also exports the very same routines of the
very same library, as C function pointers (`scipy.linalg.cython_lapack` / `cython_blas`); a call through
ctypes releases the GIL for its duration. Same routine, same library, same arguments: the same bits (tested).

Each pointer's C signature is read from its capsule and checked; where it is not the one expected (a scipy
built with 64-bit LAPACK integers, say), that routine is called through scipy's ordinary wrapper instead: the
same results, only without the overlap.
"""

from __future__ import annotations

import ctypes
import logging
import re

import numpy as np
from scipy.linalg import blas, cython_blas, cython_lapack, lapack

log = logging.getLogger(__name__)

_name = ctypes.pythonapi.PyCapsule_GetName
_name.restype, _name.argtypes = ctypes.c_char_p, [ctypes.py_object]
_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_pointer.restype, _pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]

P = ctypes.c_void_p  # every argument is a pointer (Fortran calling convention)
# name: (module, the C signature expected, with scipy's float typedef written `float`)
SIGNATURES = {
    "spotrf": (cython_lapack, "void (char *, int *, float *, int *, int *)"),
    "spotrs": (cython_lapack, "void (char *, int *, int *, float *, int *, float *, int *, int *)"),
    "stpttr": (cython_lapack, "void (char *, int *, float *, float *, int *, int *)"),
    "strttp": (cython_lapack, "void (char *, int *, float *, int *, float *, int *)"),
    "saxpy": (cython_blas, "void (int *, float *, float *, int *, float *, int *)"),
}


def exported(name: str):
    """The GIL-free ctypes function of scipy's exported routine `name`, or None when its signature is not the
    expected one (32-bit integers, float32 arrays)."""
    module, expected = SIGNATURES[name]
    capsule = getattr(module, "__pyx_capi__", {}).get(name)
    if capsule is None:
        return None
    signature = _name(capsule)
    found = re.sub(r"__pyx_t_\w+?_s\b", "float", signature.decode()) if signature else ""
    if found != expected:
        log.debug("%s: exported as %r, not %r: called through scipy's wrapper", name, found, expected)
        return None
    address = _pointer(capsule, signature)
    return ctypes.CFUNCTYPE(None, *[P] * expected.count("*"))(address)  # CFUNCTYPE: the GIL is released


FUNCTIONS = {name: exported(name) for name in SIGNATURES}
LOWER = ctypes.c_char_p(b"L")


def require(condition: bool, what: str) -> None:
    """Arguments a raw pointer call would misread (another dtype, order or shape) are refused, never passed."""
    if not condition:
        raise ValueError(f"{what} expected")


def ints(*values: int) -> list:
    return [ctypes.byref(ctypes.c_int(int(v))) for v in values]


def address(array: np.ndarray) -> int:
    return array.ctypes.data


def potrf_lower(a: np.ndarray) -> int:
    """Cholesky factorisation of the lower triangle of the square Fortran-ordered float32 `a`, in place (LAPACK
    spotrf, the upper triangle untouched, like scipy's `lapack.spotrf(a, lower=1, overwrite_a=1, clean=0)`);
    LAPACK's info."""
    function = FUNCTIONS["spotrf"]
    if function is None:
        _, info = lapack.spotrf(a, lower=1, overwrite_a=1, clean=0)
        return int(info)
    require(a.dtype == np.float32 and a.flags.f_contiguous and a.ndim == 2 and a.shape[0] == a.shape[1],
            "a square Fortran-ordered float32 matrix")
    n, info = ints(a.shape[0], a.shape[0]), ctypes.c_int(0)
    function(LOWER, n[0], address(a), n[1], ctypes.byref(info))
    return info.value


def potrs_lower(factor: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, int]:
    """The solution of factor factor^T x = rhs for the lower Cholesky factor of potrf_lower (LAPACK spotrs, rhs
    left unchanged, like `lapack.spotrs(factor, rhs, lower=1)`), and LAPACK's info."""
    function = FUNCTIONS["spotrs"]
    if function is None:
        solution, info = lapack.spotrs(factor, rhs, lower=1)
        return solution, int(info)
    require(factor.dtype == np.float32 and factor.flags.f_contiguous and factor.ndim == 2
            and factor.shape[0] == factor.shape[1] == len(rhs) and rhs.ndim == 1,
            "a square Fortran-ordered float32 factor and a vector of its size")
    solution = np.array(rhs, dtype=np.float32, copy=True)
    n, one, lda, ldb, info = *ints(factor.shape[0], 1, factor.shape[0], len(solution)), ctypes.c_int(0)
    function(LOWER, n, one, address(factor), lda, address(solution), ldb, ctypes.byref(info))
    return solution, info.value


def tpttr_lower(n: int, packed: np.ndarray) -> tuple[np.ndarray, int]:
    """The (n, n) Fortran-ordered float32 matrix whose lower triangle is `packed` (column by column), its upper
    triangle 0 (LAPACK stpttr, like `lapack.stpttr(n, packed, uplo="L")`), and LAPACK's info."""
    function = FUNCTIONS["stpttr"]
    if function is None:
        matrix, info = lapack.stpttr(n, packed, uplo="L")
        return matrix, int(info)
    require(packed.dtype == np.float32 and packed.flags.c_contiguous and packed.shape == (n * (n + 1) // 2,),
            f"a contiguous float32 triangle of {n} x {n}")
    matrix = np.zeros((n, n), dtype=np.float32, order="F")
    size, lda, info = *ints(n, n), ctypes.c_int(0)
    function(LOWER, size, address(packed), address(matrix), lda, ctypes.byref(info))
    return matrix, info.value


def trttp_lower(matrix: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """The lower triangle of the square Fortran-ordered float32 `matrix`, packed column by column (LAPACK
    strttp, like `lapack.strttp(matrix, uplo="L")`), into `out` when given, and LAPACK's info."""
    function = FUNCTIONS["strttp"]
    if function is None:
        packed, info = lapack.strttp(matrix, uplo="L")
        if out is not None:
            out[...] = packed
        return packed if out is None else out, int(info)
    require(matrix.dtype == np.float32 and matrix.flags.f_contiguous and matrix.ndim == 2
            and matrix.shape[0] == matrix.shape[1], "a square Fortran-ordered float32 matrix")
    n = matrix.shape[0]
    packed = np.empty(n * (n + 1) // 2, dtype=np.float32) if out is None else out
    require(packed.dtype == np.float32 and packed.flags.c_contiguous and packed.shape == (n * (n + 1) // 2,),
            f"a contiguous float32 output for the triangle of {n} x {n}")
    size, lda, info = *ints(n, n), ctypes.c_int(0)
    function(LOWER, size, address(matrix), lda, address(packed), ctypes.byref(info))
    return packed, info.value


def axpy(a: np.float32, x: np.ndarray, y: np.ndarray) -> None:
    """y += a x, in place, for contiguous float32 vectors of one length (BLAS saxpy, like
    `blas.saxpy(x, y, a=a)` on such a y)."""
    function = FUNCTIONS["saxpy"]
    require(x.dtype == y.dtype == np.float32 and x.flags.c_contiguous and y.flags.c_contiguous and x.ndim == y.ndim == 1
            and len(x) == len(y), "contiguous float32 vectors of one length")
    if function is None:
        blas.saxpy(x, y, a=a)
        return
    n, incx, incy = ints(len(x), 1, 1)
    function(n, ctypes.byref(ctypes.c_float(a)), address(x), incx, address(y), incy)
