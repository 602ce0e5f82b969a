"""Tutorial 1: a dense layer by hand — its forward, its backward, and the check that proves them.

What you learn
    How the forward pass Y = XW + 1bᵀ of a fully connected layer gives its three gradients by
    writing the differential dL = ⟨G_Y, dY⟩ and reading off the coefficients; that the engine's
    ``Dense`` runs exactly those lines; how a float64 central finite difference of the
    vector-Jacobian product ⟨f(x), u⟩ checks a backward pass (and rejects a wrong one); why the
    step ε of the check matters; and how layers chain by (L0).
Read alongside
    docs/derivations/layers.md — (L0) the chain rule as vector-Jacobian products, (L1)–(L4) the
    dense layer, (L5)–(L6) ReLU, (L18)–(L19) the loss, and the gradient check (G1)–(G2) in minibern/gradcheck.py;
    then minibern/layers/dense.py.
Figures (in --out)
    dense_gradcheck.png — every entry of ∂L/∂W, analytic against finite differences, and the
    check's relative error (G2) against ε: truncation error falls as ε², rounding error grows
    as 1/ε, so the best ε sits in between.
You should see (the last line; full run, seed 0)
    tutorial 1: Dense (L1)–(L4) by hand against float64 finite differences: worst rel_err
    2.3e-10 over 8 checks (bound 1e-07); a wrong G_b shows 0.75; figure ...
    and the same line with --quick (only the ε sweep of step 8 is shorter).
Time on a 2-core CPU
    a few seconds (mostly importing matplotlib); --quick sweeps fewer ε.

    python tutorials/01_dense_layer_by_hand.py --out runs/tutorial1
"""
# %% [markdown]
# Notation (docs/derivations/layers.md): N examples, D inputs, M outputs; for any array Z,
# G_Z = ∂L/∂Z has Z's shape.

# %% 1. Options and a seeded generator
from _common import pyplot, save, tutorial_args

from minibern import backend as B
from minibern.gradcheck import (GradcheckError, check_layer, distinct_values, numerical_vjp,
                                relative_error)
from minibern.layers import Dense, ReLU, Sequential
from minibern.losses import softmax_cross_entropy

np = B.host
args = tutorial_args(__doc__, quick="sweep 7 values of ε instead of 23", out="runs/tutorial1")
rng = B.make_rng(args.seed)
BOUND = 1e-7  # the largest relative error (G2) a float64 check may show
np.set_printoptions(precision=4, suppress=True)

# %% 2. The forward pass (L1): Y = X W + 1 bᵀ
# A layer small enough to print, in float64 (the check needs it: see step 6).
N, D, M = 4, 5, 3
layer = Dense(D, M, rng=rng, dtype="float64")
layer.set_parameter("b", B.asarray(rng.standard_normal(M)))  # a non-zero bias, to see it
x = rng.standard_normal((N, D))
W, b = B.to_numpy(layer.params["W"]), B.to_numpy(layer.params["b"])
y = B.to_numpy(layer.forward(B.asarray(x)))
y_by_hand = x @ W + b  # (L1), the broadcast adds b to every row
print(f"step 2: x {x.shape} @ W {W.shape} + b {b.shape} = Y {y.shape}:\n{y}")
print(f"        the layer against the formula: max |difference| = "
      f"{np.abs(y - y_by_hand).max():.1e}")

# %% 3. The backward pass (L2)–(L4), from dL = ⟨G_Y, dX W⟩ + ⟨G_Y, X dW⟩ + ⟨G_Y, 1 dbᵀ⟩
# Take any upstream gradient G_Y (what the layer above would send). Reading the coefficients of
# dW, db and dX off the differential gives G_W = Xᵀ G_Y, G_b = column sums of G_Y, G_X = G_Y Wᵀ.
g_y = rng.standard_normal((N, M))
dx = B.to_numpy(layer.backward(B.asarray(g_y)))
by_hand = {"x": g_y @ W.T,  # (L4)
           "W": x.T @ g_y,  # (L2)
           "b": g_y.sum(axis=0)}  # (L3)
from_layer = {"x": dx, "W": B.to_numpy(layer.grads["W"]), "b": B.to_numpy(layer.grads["b"])}
for name in by_hand:
    print(f"step 3: G_{name} {by_hand[name].shape}: layer against the formula, max |difference| = "
          f"{np.abs(by_hand[name] - from_layer[name]).max():.1e}")

# %% 4. Is the formula right? Finite differences of φ(X) = ⟨f(X), G_Y⟩ (G1)
# φ is a scalar whose gradient is exactly what backward returns (the vector-Jacobian product),
# so one central difference per entry, (φ(X + εe_i) − φ(X − εe_i)) / 2ε, estimates entry i.
def phi_of(key):
    def phi(value):
        if key == "x":
            return float(np.sum(B.to_numpy(layer.forward(B.asarray(value))) * g_y))
        original = layer.params[key]
        layer.set_parameter(key, B.asarray(value))
        try:
            return float(np.sum(B.to_numpy(layer.forward(B.asarray(x))) * g_y))
        finally:
            layer.set_parameter(key, original)
    return phi


numeric = {"x": numerical_vjp(phi_of("x"), x), "W": numerical_vjp(phi_of("W"), W),
           "b": numerical_vjp(phi_of("b"), b)}
print("step 4: ∂L/∂W, first row — analytic (L2) | finite differences (G1):")
for a, n in zip(by_hand["W"][0], numeric["W"][0]):
    print(f"        {a:+.10f} | {n:+.10f}")
errors = {name: relative_error(by_hand[name], numeric[name]) for name in by_hand}  # (G2)
print("        relative errors (G2): "
      + ", ".join(f"{name} {err:.1e}" for name, err in errors.items()) + f" (bound {BOUND:.0e})")

# %% 5. The library's check does the same for every input and parameter, and raises on failure
report = check_layer(layer, x, g_y, tol=BOUND)
print("step 5: check_layer(Dense): "
      + ", ".join(f"rel_err {name}={err:.1e}" for name, err in report.errors.items()))

# %% 6. What a wrong backward looks like: G_b as the batch *mean* (a common slip)
# The check must be able to fail. With the mean, every entry is N times too small:
# relative error 1 − 1/N.
wrong_b = g_y.mean(axis=0)
wrong = relative_error(wrong_b, numeric["b"])
verdict = "≫ bound — rejected" if wrong > BOUND else "≤ bound — NOT caught"
print(f"step 6: G_b = mean over the batch instead of the sum: relative error {wrong:.2f} "
      f"(= 1 − 1/N = {1 - 1 / N:.2f}) {verdict}")


class MeanBiasDense(Dense):
    """The slip above, planted in a layer, to see check_layer's report."""

    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["b"] = dout.mean(axis=0)  # wrong: (L3) sums over examples
        return dx


try:
    check_layer(MeanBiasDense(D, M, rng=1, dtype="float64"), x, g_y, tol=BOUND)
    raise SystemExit("the check accepted a wrong gradient")
except GradcheckError as failure:
    print("        check_layer raises GradcheckError: " + str(failure).splitlines()[1].strip())

# %% 7. Layers chain by (L0): Dense → ReLU → Dense, checked as one network
# ReLU (L5)–(L6) has a kink at 0, where a finite difference that straddles it mixes two slopes.
# A difference of ε = 1e-6 moves fc1's pre-activations by about 1e-6 too, so it crosses a kink
# only if one of them lies within ~1e-6 of 0: for these random inputs and weights, a chance
# of about one in a hundred thousand per pre-activation. (Spacing the inputs apart does not
# prevent it; the small ε does. A failure here with another seed is worth a look at the kink.)
net = Sequential(("fc1", Dense(D, 6, rng=2, dtype="float64")), ("relu", ReLU()),
                 ("fc2", Dense(6, M, rng=3, dtype="float64")))
chain = check_layer(net, distinct_values(rng, (N, D)), tol=BOUND)
print("step 7: check_layer(Dense → ReLU → Dense): "
      + ", ".join(f"rel_err {name}={err:.1e}" for name, err in chain.errors.items()))

# %% 8. Choosing ε: truncation error O(ε²) against rounding error O(1/ε)
# The layers above are linear in W (and ReLU piecewise linear), so their differences are exact
# at any ε. A loss with curvature shows the trade-off: the network's mean softmax cross-entropy
# (L18) as a function of fc1's weights. Its gradient: (L19) for the logits, then (L0).
labels = B.asarray(rng.integers(0, M, size=N))
x_dev = B.asarray(distinct_values(rng, (N, D)))
_, dlogits = softmax_cross_entropy(net.forward(x_dev), labels)
net.backward(dlogits)
w1 = B.to_numpy(net["fc1"].params["W"])
analytic_w1 = B.to_numpy(net["fc1"].grads["W"])


def loss_of_w1(value):
    original = net["fc1"].params["W"]
    net["fc1"].set_parameter("W", B.asarray(value))
    try:
        return float(B.to_numpy(softmax_cross_entropy(net.forward(x_dev), labels)[0]))
    finally:
        net["fc1"].set_parameter("W", original)


# float64 carries ~16 digits: L(W ± ε) differ only in their last digits when ε is tiny, and the
# Taylor remainder ε² L‴/6 dominates when ε is large (or a difference straddles a ReLU kink).
epsilons = np.logspace(-1, -12, 7 if args.quick else 23)
sweep = [relative_error(analytic_w1, numerical_vjp(loss_of_w1, w1, eps)) for eps in epsilons]
best = epsilons[int(np.argmin(sweep))]
print(f"step 8: ∂loss/∂W of fc1 against ε: relative error {sweep[0]:.1e} at ε = "
      f"{epsilons[0]:.0e}, {min(sweep):.1e} at ε = {best:.0e}, {sweep[-1]:.1e} at ε = "
      f"{epsilons[-1]:.0e}")

# The figure: every entry of ∂L/∂W, and the sweep.
plt = pyplot()
fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
left.plot(by_hand["W"].ravel(), numeric["W"].ravel(), "o")
lim = np.abs(by_hand["W"]).max() * 1.1
left.plot([-lim, lim], [-lim, lim], "k--", lw=0.8)
left.set_xlabel("analytic XᵀG (L2)")
left.set_ylabel("finite differences (G1)")
left.set_title(f"∂L/∂W, relative error {errors['W']:.1e}", fontsize=9)
right.loglog(epsilons, sweep, "o-")
right.axhline(BOUND, color="C3", ls="--", label=f"bound {BOUND:.0e}")
right.set_xlabel("ε")
right.set_ylabel("relative error (G2) of ∂loss/∂W₁")
right.set_title("truncation ∝ ε² (right), rounding ∝ 1/ε (left)", fontsize=9)
right.legend(fontsize=8)
right.grid(alpha=0.3)
figure = save(fig, args.out / "dense_gradcheck.png")

# %% Result
checks = {**{f"dense.{k}": v for k, v in report.errors.items()},
          **{f"chain.{k}": v for k, v in chain.errors.items()}}
print(f"tutorial 1: Dense (L1)–(L4) by hand against float64 finite differences: worst "
      f"rel_err {max(checks.values()):.1e} over {len(checks)} checks (bound {BOUND:.0e}); "
      f"a wrong G_b shows {wrong:.2f}; figure {figure}")

# %% [markdown]
# ## Exercises
# 1. **Plant a wrong sign in (L3).** In `MeanBiasDense.backward` (step 6), write
#    `self.grads["b"] = -dout.sum(axis=0)`. Before you run
#    `python tutorials/01_dense_layer_by_hand.py --quick`, predict the relative error (G2)
#    check_layer reports for b (the analytic gradient is exactly −1 times the true one), and
#    whether the checks of x and W notice anything.
# 2. **A batch of one.** Set `N, D, M = 1, 5, 3` in step 2. Predict step 6's relative error
#    1 − 1/N, and what check_layer then says about the mean-instead-of-sum layer. What does
#    that tell you about the batch size of a gradient check?
# 3. **Choose ε before the sweep.** Rounding error grows like 10⁻¹⁶/ε and truncation error
#    like ε²; their sum is smallest where they are equal. Predict the best ε of step 8 and the
#    relative error there, then run without --quick and read step 8 and the figure's right
#    panel.
