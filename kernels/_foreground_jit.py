"""numba-compiled loops of kernels/_foreground.py (see its docstring): the band and dense Jacobi
steps and the band's bilinear sampling. Imported only on first use (_foreground._jit_kernels), never
when bgvid is imported; module-level functions so numba's on-disk cache (cache=True) holds them all
across processes. The NumPy bodies in _foreground.py are the reference: same float32 arithmetic."""

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def solve_pixel(a, wsum, s0, s1, s2, s3, s4, s5, colour, out):
    # one pixel's 2x2 system of _foreground's docstring (inverted as _coefficients does), per channel:
    # s = the weighted neighbour sums of F (s0..s2) and B (s3..s5), wsum their weights' sum
    one = np.float32(1.0)
    zero = np.float32(0.0)
    a1 = one - a
    m00 = a * a + wsum
    m11 = a1 * a1 + wsum
    m01 = a * a1
    inv = one / (m00 * m11 - m01 * m01)
    cff = m11 * inv
    cfb = -m01 * inv
    cbb = m00 * inv
    for c, sf, sb in ((0, s0, s3), (1, s1, s4), (2, s2, s5)):
        bf = a * colour[c]
        rf = sf + bf
        rb = sb + (colour[c] - bf)
        out[c] = min(max(cff * rf + cfb * rb, zero), one)
        out[c + 3] = min(max(cfb * rf + cbb * rb, zero), one)

@numba.njit(cache=True, nogil=True)  # nogil: a batch's frames are solved on parallel threads
def band_jacobi(values, rows, nbr_rows, ab, a_nbrs, ib, n_iter, eps, omega):
    n = rows.size
    zero = np.float32(0.0)
    new = np.empty((n, 6), np.float32)
    for _ in range(n_iter):
        for i in range(n):
            a = ab[i]
            s0 = s1 = s2 = s3 = s4 = s5 = zero
            wsum = zero
            for k in range(4):
                wgt = eps + omega * abs(a - a_nbrs[k, i])
                wsum += wgt
                r = nbr_rows[k, i]
                s0 += wgt * values[r, 0]
                s1 += wgt * values[r, 1]
                s2 += wgt * values[r, 2]
                s3 += wgt * values[r, 3]
                s4 += wgt * values[r, 4]
                s5 += wgt * values[r, 5]
            solve_pixel(a, wsum, s0, s1, s2, s3, s4, s5, ib[i], new[i])
        for i in range(n):  # Jacobi: every pixel of this step saw the previous iterate
            r = rows[i]
            for c in range(6):
                values[r, c] = new[i, c]

@numba.njit(cache=True, nogil=True)
def bilinear_at(flat, sw, y0, y1, fy, x0, x1, fx, ys, xs):
    n = ys.size
    nc = flat.shape[1]
    one = np.float32(1.0)
    out = np.empty((n, nc), np.float32)
    for j in range(n):
        y, x = ys[j], xs[j]
        wy, wx = fy[y], fx[x]
        p00 = y0[y] * sw + x0[x]
        p01 = y0[y] * sw + x1[x]
        p10 = y1[y] * sw + x0[x]
        p11 = y1[y] * sw + x1[x]
        for c in range(nc):
            top = flat[p00, c] * (one - wx) + flat[p01, c] * wx
            bottom = flat[p10, c] * (one - wx) + flat[p11, c] * wx
            out[j, c] = top * (one - wy) + bottom * wy
    return out

@numba.njit(cache=True, nogil=True)
def dense_jacobi(fb, a, image, n_iter, eps, omega):
    # every pixel of a level, neighbours clamped at the border (themselves, weight eps), in place
    h, w = a.shape
    zero = np.float32(0.0)
    new = np.empty_like(fb)
    for _ in range(n_iter):
        for y in range(h):
            for x in range(w):
                ap = a[y, x]
                s0 = s1 = s2 = s3 = s4 = s5 = zero
                wsum = zero
                for k in range(4):  # up, down, left, right as _SHIFTS
                    if k == 0:
                        ny, nx = max(y - 1, 0), x
                    elif k == 1:
                        ny, nx = min(y + 1, h - 1), x
                    elif k == 2:
                        ny, nx = y, max(x - 1, 0)
                    else:
                        ny, nx = y, min(x + 1, w - 1)
                    wgt = eps + omega * abs(ap - a[ny, nx])
                    wsum += wgt
                    s0 += wgt * fb[ny, nx, 0]
                    s1 += wgt * fb[ny, nx, 1]
                    s2 += wgt * fb[ny, nx, 2]
                    s3 += wgt * fb[ny, nx, 3]
                    s4 += wgt * fb[ny, nx, 4]
                    s5 += wgt * fb[ny, nx, 5]
                solve_pixel(ap, wsum, s0, s1, s2, s3, s4, s5, image[y, x], new[y, x])
        fb[:] = new
