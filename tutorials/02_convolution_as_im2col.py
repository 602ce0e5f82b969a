"""Tutorial 2: convolution as im2col and one matrix product, on an image small enough to see.

What you learn
    That a convolution (a cross-correlation, as in every deep-learning library) is a dense
    layer in disguise: im2col copies every KH×KW window of the padded input into one column of
    a matrix, and a single GEMM of the flattened filters with that matrix gives every output
    pixel at once; how the output size follows from the kernel, stride and padding; what the
    column matrix costs in memory; and how the backward pass is the dense one transposed, with
    col2im — im2col's adjoint — folding the column gradients back onto the pixels.
Read alongside
    docs/derivations/layers.md — (L7) im2col, (L8) the forward GEMM, (L9)–(L12) backward and
    col2im, (L13) adjointness, (L14) the output size; then minibern/layers/im2col.py and
    minibern/layers/conv.py.
Figures (in --out)
    im2col.png — a 7×7 image with one 3×3 window marked, the vertical-edge filter, the 9×25
    column matrix (that window is one of its columns) and the 5×5 output of the one GEMM.
You should see (the last line; full run, seed 0)
    tutorial 2: convolution = im2col + one GEMM, equal to the naive loops; backward against
    float64 finite differences and (L13): worst rel_err 1.4e-09 over 10 checks (bound 1e-07);
    figure ...
    and with --quick the same line with worst rel_err 1.1e-09.
Time on a 2-core CPU
    a few seconds; --quick checks a smaller random convolution.

    python tutorials/02_convolution_as_im2col.py --out runs/tutorial2
"""
# %% [markdown]
# Notation (docs/derivations/layers.md): N examples, C channels, H×W input, F filters of
# KH×KW, stride s, zero padding p, OH×OW output. Arrays are NCHW; filters (F, C, KH, KW).

# %% 1. Options
from _common import pyplot, save, tutorial_args

from minibern import backend as B
from minibern.gradcheck import check_layer, relative_error
from minibern.kernels.im2col import col_bytes
from minibern.layers import Conv2D, col2im, conv_output_size, im2col

np = B.host
args = tutorial_args(__doc__, quick="a smaller random convolution in steps 5–6",
                     out="runs/tutorial2")
rng = B.make_rng(args.seed)
BOUND = 1e-7  # largest relative error (G2) accepted from a float64 check
np.set_printoptions(precision=2, suppress=True, linewidth=120)


def naive_conv(x, w, b, stride, pad):
    """The definition, one output pixel at a time: y[n,f,oy,ox] = b_f + Σ_{c,ky,kx}
    w[f,c,ky,kx] · x_pad[n, c, oy·s + ky, ox·s + kx] — the window under the filter, multiplied
    entry by entry with it and summed. One loop over every output pixel, no cleverness."""
    kh, kw = w.shape[2:]
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (x.shape[2] + 2 * pad - kh) // stride + 1  # (L14)
    ow = (x.shape[3] + 2 * pad - kw) // stride + 1
    y = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for n, f, oy, ox in np.ndindex(*y.shape):
        window = x_pad[n, :, oy * stride:oy * stride + kh, ox * stride:ox * stride + kw]
        y[n, f, oy, ox] = b[f] + np.sum(window * w[f])
    return y


# %% 2. A tiny image you can see, and a filter that finds vertical edges
image = np.zeros((7, 7))
image[1:6, 2] = 1.0  # a vertical bar ...
image[1, 2:5] = 1.0  # ... a top stroke ...
image[3, 2:4] = 0.5  # ... and a fainter middle one: an "F"
kernel = np.array([[1.0, 0.0, -1.0]] * 3)  # bright on the left, dark on the right
x = image[None, None]  # N = C = 1: shape (1, 1, 7, 7)
w = kernel[None, None]  # F = C = 1: shape (1, 1, 3, 3)
stride, pad = 1, 0
oh = conv_output_size(7, 3, stride, pad)  # (L14): ⌊(7 + 0 − 3)/1⌋ + 1 = 5
print(f"step 2: image (1, 1, 7, 7), kernel (1, 1, 3, 3), stride {stride}, pad {pad} → "
      f"OH = OW = ⌊(H + 2p − KH)/s⌋ + 1 = {oh} (L14)")
print(image)

# %% 3. im2col (L7): one column per output pixel, one row per (c, ky, kx)
col = B.to_numpy(im2col(B.asarray(x), (3, 3), stride, pad))
print(f"step 3: the column matrix X_c has shape {col.shape} = (C·KH·KW, N·OH·OW); column "
      f"(oy, ox) = (1, 0) is the window at rows 1–3, columns 0–2, flattened:")
print(f"        column 5: {col[:, 5]}\n        window:   {image[1:4, 0:3].ravel()}")
print(f"        memory: N·OH·OW·C·KH·KW·itemsize = {col_bytes(1, 1, 3, 3, oh, oh, 8)} bytes here; "
      f"for LeNet-5's conv2 on a batch of 100 in float32, "
      f"{col_bytes(100, 20, 5, 5, 8, 8, 4) / 1e6:.1f} MB")

# %% 4. One GEMM (L8): Y_2 = W_2 X_c + b, then reshape to NCHW — and the loops agree
w2 = w.reshape(1, 9)  # filters as rows, same (c, ky, kx) order as the column rows
y_gemm = (w2 @ col).reshape(1, 1, oh, oh)  # (L8), b = 0
y_loops = naive_conv(x, w, np.zeros(1), stride, pad)
layer = Conv2D(1, 1, 3, stride, pad, dtype="float64")
layer.set_parameter("W", B.asarray(w))
y_layer = B.to_numpy(layer.forward(B.asarray(x)))
print(f"step 4: output 5×5 by one GEMM:\n{y_gemm[0, 0]}")
print(f"        max |GEMM − loops| = {np.abs(y_gemm - y_loops).max():.1e}, "
      f"max |Conv2D − loops| = {np.abs(y_layer - y_loops).max():.1e}")

# %% 5. A random convolution with everything switched on: N, C, F > 1, stride 2, padding 1
n, c, h, f = (2, 2, 5, 3) if args.quick else (3, 3, 8, 4)
x = rng.standard_normal((n, c, h, h))
layer = Conv2D(c, f, 3, stride=2, pad=1, rng=rng, dtype="float64")
layer.set_parameter("b", B.asarray(rng.standard_normal(f)))
w, b = B.to_numpy(layer.params["W"]), B.to_numpy(layer.params["b"])
reference = naive_conv(x, w, b, 2, 1)
forward_diff = {}
for layout in ("channels_first", "channels_last"):  # (L7) and (L7b): same numbers, other order
    layer.layout = layout
    forward_diff[layout] = relative_error(B.to_numpy(layer.forward(B.asarray(x))), reference)
print(f"step 5: x {x.shape}, W {w.shape}, stride 2, pad 1 → y {reference.shape}; "
      "relative error (G2) of Conv2D against the loops: "
      + ", ".join(f"{k} {v:.1e}" for k, v in forward_diff.items()))

# %% 6. Backward (L9)–(L12) against float64 finite differences, and col2im as the adjoint (L13)
# im2col is linear, X_c = A x, so its backward is Aᵀ: col2im adds every column entry back onto
# the pixel it was copied from. Adjointness ⟨im2col(x), Y⟩ = ⟨x, col2im(Y)⟩ holds for all x, Y.
backward = {}
for layout in ("channels_first", "channels_last"):
    layer.layout = layout
    backward[layout] = check_layer(layer, x, tol=BOUND).errors
    print(f"step 6: check_layer(Conv2D, {layout}): "
          + ", ".join(f"rel_err {name}={err:.1e}" for name, err in backward[layout].items()))
cols = im2col(B.asarray(x), (3, 3), 2, 1)
y_random = rng.standard_normal(tuple(cols.shape))
left = float(np.sum(B.to_numpy(cols) * y_random))
right = float(np.sum(x * B.to_numpy(col2im(B.asarray(y_random), x.shape, (3, 3), 2, 1))))
adjoint = abs(left - right) / max(abs(left), abs(right))
print(f"        ⟨im2col(x), Y⟩ = {left:.12f}, ⟨x, col2im(Y)⟩ = {right:.12f}: relative "
      f"difference {adjoint:.1e} (L13)")

# %% 7. The picture: image → columns → one GEMM → output
plt = pyplot()
fig, axes = plt.subplots(1, 4, figsize=(12, 3.2),
                         gridspec_kw={"width_ratios": [1, 0.5, 2.6, 0.8]})
axes[0].imshow(image, cmap="gray_r", vmin=0, vmax=1)
axes[0].add_patch(plt.Rectangle((-0.5, 0.5), 3, 3, fill=False, color="C3", lw=2))
axes[0].set_title("image 7×7 (window (1, 0) in red)", fontsize=9)
axes[1].imshow(kernel, cmap="bwr", vmin=-1, vmax=1)
axes[1].set_title("filter 3×3", fontsize=9)
axes[2].imshow(col, cmap="gray_r", vmin=0, vmax=1, aspect="auto")
axes[2].add_patch(plt.Rectangle((4.5, -0.5), 1, 9, fill=False, color="C3", lw=2))
axes[2].set_title("im2col: 9 rows (ky, kx) × 25 columns (oy, ox) (L7)", fontsize=9)
axes[2].set_xlabel("output pixel")
axes[2].set_ylabel("kernel offset")
axes[3].imshow(y_gemm[0, 0], cmap="bwr", vmin=-3, vmax=3)
axes[3].add_patch(plt.Rectangle((-0.5, 0.5), 1, 1, fill=False, color="C3", lw=2))
axes[3].set_title("W₂ X_c → 5×5 (L8)", fontsize=9)
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
figure = save(fig, args.out / "im2col.png")

# %% Result
checks = {**{f"forward.{k}": v for k, v in forward_diff.items()},
          **{f"{layout}.{k}": v for layout, errs in backward.items() for k, v in errs.items()},
          "adjoint": adjoint, "tiny.gemm_vs_loops": relative_error(y_gemm, y_loops)}
equal = max(*forward_diff.values(), checks["tiny.gemm_vs_loops"]) < BOUND
print(f"tutorial 2: convolution = im2col + one GEMM, {'equal' if equal else 'NOT equal'} to the "
      f"naive loops; backward against "
      f"float64 finite differences and (L13): worst rel_err {max(checks.values()):.1e} over "
      f"{len(checks)} checks (bound {BOUND:.0e}); figure {figure}")

# %% [markdown]
# ## Exercises
# 1. **Convolution or cross-correlation?** Textbook convolution flips the kernel. In
#    `naive_conv`, use `w[f, :, ::-1, ::-1]` instead of `w[f]`. Before you run
#    `python tutorials/02_convolution_as_im2col.py --quick`, predict the output of the "F"
#    under the flipped edge filter (how does [1, 0, −1] change?), the max |GEMM − loops| of
#    step 4, and which of the final line's checks fail.
# 2. **Stride and padding.** Set `stride, pad = 2, 1` in step 2. Predict OH by (L14) and the
#    shape of the column matrix in step 3 before you run; then work out which window column
#    5 now holds (the printed labels were written for stride 1).
# 3. **Where the memory goes.** Step 3 prints the column matrix of LeNet-5's conv2 on a batch
#    of 100. Predict conv1's by N·OH·OW·C·KH·KW·itemsize (C = 1, 5×5 filters, 28×28 input, no
#    padding, float32) and say which of the two is larger and why, although conv2 has 20
#    input channels. Check with `col_bytes(100, 1, 5, 5, 24, 24, 4)`.
