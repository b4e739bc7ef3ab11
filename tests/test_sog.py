"""SOG v2: our writer and reader on real data, and against PlayCanvas's splat-transform (the oracle).

The oracle tests install ``@playcanvas/splat-transform`` (pinned in :mod:`bench.sog`) with npm into
a cache outside the repository, once, and skip with the reason printed where node/npm are missing or the
install fails (an offline CI). GPU tests skip where CuPy or a device is missing.
"""
from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cameras import cameras_for
from conftest import REPO, SCENE_FILES, psnr, scene_path
from PIL import Image
from plyfile import PlyData

from bench.sog import ReferenceUnavailable, run_splat_transform, splat_transform_cli
from rasterizer import sog
from rasterizer.backends import gpu_unavailable_reason
from rasterizer.errors import SceneError
from rasterizer.kmeans import allocate, kmeans, quantize_1d
from rasterizer.render import Prepared
from rasterizer.scene import Scene, load_scene, save_ply
from rasterizer.splatfile import convert as ply_to_splat

GPU_REASON = gpu_unavailable_reason()
gpu = [pytest.mark.gpu, pytest.mark.skipif(GPU_REASON is not None, reason=f"GPU unavailable: {GPU_REASON}")]


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def small():
    """About 3,000 Gaussians of the demo room, SH degree 3 (palette 2048: the k-means splits cells)."""
    from rasterizer.demo import demo_scene
    s = demo_scene(0.2)
    return s.subset(np.arange(0, len(s), 4))


@pytest.fixture(scope="module")
def small_sog(small, tmp_path_factory):
    path = tmp_path_factory.mktemp("sog") / "small.sog"
    stats = sog.write_sog(small, path, device="cpu")
    return path, stats


def in_texel_order(scene: Scene) -> Scene:
    return scene.subset(sog.morton_order(scene.means))


def unzip(bundle: Path, folder: Path) -> Path:
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(folder)
    return folder


def rebundle(src: Path, dst: Path, edit) -> Path:
    """Copy a bundle member by member; ``edit(members)`` may change, add or drop members first."""
    with zipfile.ZipFile(src) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    edit(members)
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return dst


def webp(rgba: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="WEBP", lossless=True, exact=True)
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


# --------------------------------------------------------------------------- round trip

def assert_within_quantisation(dec: Scene, src: Scene, bundle: Path):
    """``dec`` (decoded from ``bundle``) is ``src`` (in texel order) up to each field's quantisation."""
    with zipfile.ZipFile(bundle) as zf:
        meta = json.loads(zf.read("meta.json"))
        lab = decode(zf.read(meta["shN"]["files"][1])).reshape(-1, 4) if "shN" in meta else None
    n = len(src)
    assert len(dec) == n == meta["count"]

    # positions: one step of the 16-bit grid in the log domain, mapped back through exp
    step = (np.array(meta["means"]["maxs"]) - meta["means"]["mins"]) / 65535
    bound = step * (np.abs(src.means.astype(np.float64)) + 1) * np.exp(step) + 1e-6
    assert (np.abs(dec.means - src.means) <= bound).all()

    # rotations: the same rotation (q or -q), three 8-bit components
    qs = src.quats / np.linalg.norm(src.quats, axis=1, keepdims=True)
    assert np.allclose(np.linalg.norm(dec.quats, axis=1), 1, atol=1e-6)
    assert np.abs(np.einsum("ij,ij->i", qs, dec.quats)).min() > 0.9995

    # scales and DC colours: each decoded value is the codebook entry nearest to the source value
    for got, want, cb in ((dec.scales, src.scales, meta["scales"]["codebook"]),
                          (dec.sh[:, 0], src.sh[:, 0], meta["sh0"]["codebook"])):
        cb = np.asarray(cb, np.float32)
        assert np.isin(got, cb).all()
        nearest = np.abs(want[..., None] - cb).min(-1)
        assert (np.abs(got - want) <= nearest + 1e-6).all()

    # opacity: 8 bits of sigmoid, truncated (a zero byte decodes to the 1e-6 floor)
    a_src, a_dec = src.sigmoid_opacities(), dec.sigmoid_opacities()
    assert (a_dec <= np.maximum(a_src, 1e-6) + 1e-6).all() and (a_src - a_dec < 1 / 255 + 1e-6).all()

    if lab is None:
        assert dec.sh_degree == 0
        return
    # SH bands 1-3: Gaussians sharing a palette entry share coefficients; the palette keeps the detail
    assert dec.sh_degree == src.sh_degree == meta["shN"]["bands"]
    labels = lab[:n, 0].astype(int) | (lab[:n, 1].astype(int) << 8)
    rest_src, rest_dec = src.sh[:, 1:].reshape(n, -1), dec.sh[:, 1:].reshape(n, -1)
    first = np.unique(labels, return_index=True)[1]
    assert np.array_equal(rest_dec, rest_dec[first][np.searchsorted(labels[first], labels)])
    err = ((rest_dec - rest_src) ** 2).sum(1).mean()
    var = ((rest_src - rest_src.mean(0)) ** 2).sum(1).mean()
    # (two Gaussians an entry on the real 1000-Gaussian scene leave about a tenth of the variance)
    assert err < 0.2 * var, (err, var)


def test_round_trip_within_quantisation(small, small_sog):
    path, stats = small_sog
    n = len(small)
    assert stats.count == n and (stats.width, stats.height) == sog.image_size(n)
    assert stats.palette == sog.palette_size(n) == 2048 and stats.kmeans_device == "cpu"
    assert_within_quantisation(sog.read_sog(path), in_texel_order(small), path)


def test_round_trip_real_sh3_scene(tmp_path):
    src = load_scene(scene_path("loadersgl-train-1000.ply"))
    stats = sog.write_sog(src, tmp_path / "t.sog", device="cpu")
    assert stats.palette == 512
    assert_within_quantisation(sog.read_sog(stats.path), in_texel_order(src), stats.path)


def test_same_bytes_every_run(small, small_sog, tmp_path):
    first = small_sog[0].read_bytes()
    again = sog.write_sog(small, tmp_path / "again.sog", device="cpu", workers=1).path.read_bytes()
    assert again == first


def test_bundle_layout_and_meta(small_sog):
    path, stats = small_sog
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        meta = json.loads(zf.read("meta.json"))
        assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)
        names = [i.filename for i in infos]
        files = [f for key in ("means", "scales", "quats", "sh0", "shN") for f in meta[key]["files"]]
        assert sorted(names) == sorted(["meta.json", *files])
        for name in files:
            data = zf.read(name)
            assert data[:4] == b"RIFF" and data[8:16] == b"WEBPVP8L", f"{name} is not lossless WebP"
            w, h = Image.open(io.BytesIO(data)).size
            assert (w, h) == ((960, 32) if name == "shN_centroids.webp" else (stats.width, stats.height))
    assert meta["version"] == 2 and meta["shN"]["bands"] == 3 and meta["shN"]["count"] == 2048
    for key in ("scales", "sh0", "shN"):
        cb = meta[key]["codebook"]
        assert len(cb) == 256 and cb == sorted(cb)
    assert stats.bytes == path.stat().st_size


def test_lossless_webp_round_trips_transparent_pixels():
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (37, 53, 4), dtype=np.uint8)
    rgba[::3, :, 3] = 0      # fully transparent pixels keep their RGB only with `exact`
    data = sog.encode_webp(rgba.reshape(-1), 53, 37)
    assert np.array_equal(decode(data), rgba)


def test_sh0_scene_has_no_palette(tmp_path):
    src = load_scene(scene_path("v3dg-donut-fused.ply"))
    stats = sog.write_sog(src, tmp_path / "donut.sog", device="cpu")
    assert stats.palette == 0 and stats.kmeans_device == ""
    with zipfile.ZipFile(stats.path) as zf:
        assert "shN" not in json.loads(zf.read("meta.json"))
        assert not any(n.startswith("shN") for n in zf.namelist())
    dec = sog.read_sog(stats.path)
    assert dec.sh_degree == 0 and len(dec) == len(src)
    # about 14 bytes a Gaussian against the PLY's 56 (SH 0)
    assert stats.bytes * 3 < (scene_path("v3dg-donut-fused.ply")).stat().st_size


def test_sizes_and_palette_rule():
    assert sog.image_size(1) == (4, 4) and sog.image_size(1000) == (32, 32)
    assert sog.image_size(1_000_000) == (1000, 1000) and sog.image_size(1_000_001) == (1004, 1000)
    assert [sog.palette_size(n) for n in (1, 1000, 1023, 1024, 2047, 2048, 100_000, 10**6, 10**8)] == \
        [1, 512, 512, 1024, 1024, 2048, 65536, 65536, 65536]


# --------------------------------------------------------------------------- the encoders

def test_morton_order_is_a_z_curve():
    rng = np.random.default_rng(5)
    pts = rng.random((5000, 3), dtype=np.float32) * [4, 1, 2]
    order = sog.morton_order(pts)
    assert np.array_equal(np.sort(order), np.arange(len(pts)))
    p = pts[order].astype(np.float64)
    lo, ext = pts.min(0), pts.max(0).astype(np.float64) - pts.min(0)
    q = np.minimum(1023, (p - lo) * (1024 / ext)).astype(np.uint32)
    codes = sog._part1by2(q[:, 0]) | sog._part1by2(q[:, 1]) << 1 | sog._part1by2(q[:, 2]) << 2
    assert (np.diff(codes.astype(np.int64)) >= 0).all()
    # a coincident cluster larger than a bucket is refined by its own bounding box, stably
    dup = np.concatenate([pts[:10], np.repeat(pts[:1], 300, 0) + rng.random((300, 3), dtype=np.float32) * 1e-6])
    o = sog.morton_order(dup)
    assert np.array_equal(np.sort(o), np.arange(len(dup)))


def test_quaternion_bytes_decode_to_the_rotation():
    rng = np.random.default_rng(9)
    q = rng.normal(size=(4000, 4)).astype(np.float32)
    q[:8] = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, 0], [0, 0, 0, 2], [-1, 0, 0, 0],
             [0.5, 0.5, 0.5, 0.5], [0.5, -0.5, 0.5, -0.5], [0.7, 0.7, 0, 0]]
    b = sog.encode_quats(q)
    assert set(np.unique(b[:, 3])) <= {252, 253, 254, 255}
    assert np.array_equal(b[:5, 3], [252, 253, 254, 255, 252])
    # the dropped component is the largest; decode as the specification says
    abc = (b[:, :3] / 255 - 0.5) * 2 / math.sqrt(2)
    d = np.sqrt(np.maximum(0, 1 - (abc ** 2).sum(1)))
    mode = b[:, 3] - 252
    dec = np.empty((len(q), 4))
    for m, kept in enumerate(([1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2])):
        sel = mode == m
        dec[np.ix_(sel, kept)] = abc[sel]
        dec[sel, m] = d[sel]
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    assert np.abs((dec * qn).sum(1)).min() > 0.9995


def test_quantize_1d_codebook():
    rng = np.random.default_rng(11)
    vals = np.concatenate([rng.normal(-5, 1, 30000), rng.normal(3, 0.1, 3000), [40.0, -60.0]]).astype(np.float32)
    cb, lab = quantize_1d(vals, sog.CODEBOOK_SIZE)
    assert cb.dtype == np.float32 and len(cb) == 256 and (np.diff(cb) >= 0).all()
    assert cb[0] <= -59 and cb[-1] >= 39   # the outliers keep entries of their own
    # every label is (one of) the nearest entries
    err = np.abs(cb[lab] - vals)
    assert (err <= np.abs(vals[:, None] - cb[None]).min(1) + 1e-6).all()
    # few distinct values: exact entries, padded with the last
    cb2, lab2 = quantize_1d(np.array([1, 2, 2, 3, 1], np.float32), sog.CODEBOOK_SIZE)
    assert np.array_equal(cb2[:3], [1, 2, 3]) and (cb2[3:] == 3).all() and np.array_equal(cb2[lab2], [1, 2, 2, 3, 1])
    cb3, lab3 = quantize_1d(np.full(10, 0.25, np.float32), sog.CODEBOOK_SIZE)
    assert (cb3 == 0.25).all() and (lab3 == 0).all()


def test_quantize_1d_stages_against_plain_loops():
    """The binning adds each bin's values one after the other, also across its chunks (bit-equal to a plain
    loop); the dynamic programme's split is its plain loop's, bit for bit."""
    from rasterizer.kmeans import _bin_sums, _split_bins
    rng = np.random.default_rng(12)
    srt = np.sort(np.concatenate([rng.normal(0, 1, 500), np.full(40, 0.5)]).astype(np.float32))
    nval, bins_n, beta = len(srt), 64, 0.7
    vmin, vrange = float(srt[0]), float(srt[-1] - srt[0])
    counts, sums = np.zeros(bins_n), np.zeros(bins_n)
    for i, v in enumerate(srt.astype(np.float64)):
        b = int(min(np.floor((i / nval * beta + (v - vmin) / vrange * (1 - beta)) * bins_n), bins_n - 1))
        counts[b] += 1
        sums[b] += v
    for chunk in (7, 64, 1 << 20):
        c, s = _bin_sums(srt, nval, beta, vmin, vrange, bins_n, chunk=chunk)
        assert np.array_equal(c, counts) and np.array_equal(s, sums), chunk
    # the dynamic programme against its plain loop, on values of few distinct levels spread over many
    # bins: many runs of (rounding-noise) zero error, where only the exact order of the search gives
    # the same split; blocks of 5 rows put the edges of the blocks everywhere
    srt = np.sort((np.round(rng.normal(0, 1, 3000) * 2) / 2).astype(np.float32))
    nb, k = 96, 24
    vmin, vrange = float(srt[0]), float(srt[-1] - srt[0])
    counts, sums = _bin_sums(srt, len(srt), 0.6, vmin, vrange, nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        centers = np.where(counts > 0, sums / counts, vmin + (np.arange(nb) + 0.5) / nb * vrange)
    weights = np.where(counts > 0, np.sqrt(counts), 0.0)
    pw, pwx, pwxx = (np.concatenate([[0.0], np.cumsum(weights * centers ** p)]) for p in (0, 1, 2))

    def err(a, b):   # bins a..b, as the module computes it
        w = pw[b + 1] - pw[a]
        return 0.0 if w <= 0 else (pwxx[b + 1] - pwxx[a]) - (pwx[b + 1] - pwx[a]) ** 2 / w

    prev, split = [err(0, j) for j in range(nb)], np.zeros((k + 1, nb), int)
    for m in range(2, k + 1):
        cur = [1e30] * nb
        for j in range(m - 1, nb):
            best, best_s = 1e30, m - 2
            for s in range(m - 2, j):
                if prev[s] + err(s + 1, j) < best:
                    best, best_s = prev[s] + err(s + 1, j), s
            cur[j], split[m, j] = best, best_s
        prev = cur
    want, j = np.empty(k), nb - 1
    for m in range(k, 0, -1):
        s = split[m, j] if m > 1 else -1
        w = pw[j + 1] - pw[s + 1]
        want[m - 1] = (centers[s + 1] + centers[j]) * 0.5 if w <= 0 else (pwx[j + 1] - pwx[s + 1]) / w
        j = s
    for rows in (5, 128):
        assert np.array_equal(_split_bins(pw, pwx, pwxx, centers, k, rows=rows), want), rows


def test_allocate_splits_k_in_proportion():
    counts = np.array([500, 0, 3, 1, 250, 246])
    alloc = allocate(counts, 100)
    assert alloc.sum() == 100 and (alloc <= counts).all()
    # 50, 0, 0.3, 0.1, 25, 24.6 → largest remainder 50, 0, 0, 0, 25, 25 → the two small cells get
    # one each, taken from the largest
    assert np.array_equal(alloc, [48, 0, 1, 1, 25, 25])
    assert np.array_equal(allocate(np.array([1, 1, 1]), 3), [1, 1, 1])


@pytest.fixture(scope="module")
def blobs():
    """4,000 points in 45 dims around 300 random centres of random spread (SH-like sizes)."""
    rng = np.random.default_rng(21)
    centres = rng.normal(0, 0.05, (300, 45))
    which = rng.integers(0, 300, 4000)
    return (centres[which] + rng.normal(0, 1, (4000, 45)) * rng.uniform(0.001, 0.02, (300, 1))[which]
            ).astype(np.float32)


def test_kmeans_deterministic_and_consistent(blobs):
    a = kmeans(blobs, 2048, iterations=5, seed=1, device="cpu")   # n·k above FLAT_BUDGET: cells
    b = kmeans(blobs, 2048, iterations=5, seed=1, device="cpu")
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.centroids, b.centroids)
    assert a.labels.max() < 2048 and a.centroids.shape == (2048, 45) and a.labels.dtype == np.uint32
    # every used centroid is the mean of its points
    for c in np.unique(a.labels)[::37]:
        assert np.allclose(a.centroids[c], blobs[a.labels == c].mean(0), atol=1e-6)
    # the cells cost little against plain Lloyd over all points from random points (the reference's way)
    err = ((blobs - a.centroids[a.labels]) ** 2).sum(1).mean()
    x = blobs.astype(np.float64)
    cent = x[np.random.default_rng(0).choice(len(x), 2048, replace=False)]
    for _ in range(5):
        lab = ((x[:, None, :] - cent[None]) ** 2).sum(-1).argmin(1)
        used = np.bincount(lab, minlength=2048) > 0
        cent[used] = np.stack([x[lab == c].mean(0) for c in np.flatnonzero(used)])
    flat = ((x - cent[((x[:, None, :] - cent[None]) ** 2).sum(-1).argmin(1)]) ** 2).sum(1).mean()
    assert err < 1.1 * flat, (err, flat)
    # as many entries as points (or more): every point is its own entry
    e = kmeans(blobs[:100], 128, device="cpu")
    assert np.array_equal(e.centroids[e.labels], blobs[:100]) and e.centroids.shape == (128, 45)


def test_kmeans_collapses_equal_rows(blobs):
    """Copies of a row are one point of their summed weight: the same result as clustering the distinct
    rows with those weights, the copies share a label, and fewer distinct rows than centroids are exact."""
    from rasterizer.kmeans import distinct_rows
    rng = np.random.default_rng(5)
    base = blobs[:1500]
    pick = rng.integers(0, len(base), 6000)
    many = np.concatenate([np.zeros((3000, 45), np.float32), base[pick]])   # untrained SH bands: zeros
    first, inverse = distinct_rows(many)
    assert np.array_equal(many[first][inverse], many) and first[0] == 0 and len(first) == len(np.unique(pick)) + 1
    wide = np.zeros((len(many), 48), np.float32)   # the SOG writer's rows: strided views of the SH array
    wide[:, 3:] = many
    f2, i2 = distinct_rows(wide[:, 3:])
    assert np.array_equal(f2, first) and np.array_equal(i2, inverse)
    a = kmeans(many, 512, iterations=4, seed=3, device="cpu")
    weights = np.bincount(inverse).astype(np.float64)
    b = kmeans(many[first], 512, iterations=4, seed=3, device="cpu", weights=weights)
    assert np.array_equal(a.centroids, b.centroids) and np.array_equal(a.labels, b.labels[inverse])
    # 40 distinct rows, 256 entries: every row is exactly an entry, in a blink
    few = np.repeat(blobs[:40], 500, axis=0)
    c = kmeans(few, 256, device="cpu")
    assert np.array_equal(c.centroids[c.labels], few)


@pytest.mark.parametrize("gpu_case", [pytest.param(0, marks=gpu)])
def test_kmeans_on_the_gpu(small, blobs, gpu_case, tmp_path):
    rest = blobs
    g1 = kmeans(rest, 2048, seed=2, device="gpu")
    g2 = kmeans(rest, 2048, seed=2, device="gpu")
    c = kmeans(rest, 2048, seed=2, device="cpu")
    assert g1.device == "gpu" and np.array_equal(g1.labels, g2.labels) and np.array_equal(g1.centroids, g2.centroids)
    eg = ((rest - g1.centroids[g1.labels]) ** 2).sum(1).mean()
    ec = ((rest - c.centroids[c.labels]) ** 2).sum(1).mean()
    assert eg <= 1.05 * ec + 1e-12
    a = sog.write_sog(small, tmp_path / "a.sog", device="gpu")
    b = sog.write_sog(small, tmp_path / "b.sog", device="gpu")
    assert a.kmeans_device == "gpu" and a.path.read_bytes() == b.path.read_bytes()
    assert len(sog.read_sog(a.path)) == len(small)


def _seed_case(blobs):
    """Leaves smaller than a GPU block, larger, and one holding 95 copies of a row; weights at random."""
    rng = np.random.default_rng(4)
    sizes, ks = np.array([5, 700, 3000, 295]), np.array([5, 40, 700, 60])
    x = blobs[:sizes.sum()].copy()
    x[-295:-200] = x[-295]
    w = rng.uniform(0.1, 1.0, len(x)).astype(np.float32)
    return x, w, np.concatenate([[0], np.cumsum(sizes)]), ks


def _assert_seeds_are_distinct_rows_of_their_leaf(seeds, x, starts, ks):
    offsets = np.concatenate([[0], np.cumsum(ks)])
    for leaf in range(len(ks)):
        rows = x[starts[leaf]:starts[leaf + 1]]
        got = seeds[offsets[leaf]:offsets[leaf + 1]]
        hits = (got[:, None, :] == rows[None]).all(-1)
        assert hits.any(1).all(), f"leaf {leaf}: a seed that is not one of its rows"
        assert len(np.unique(got, axis=0)) == len(got), f"leaf {leaf}: a row drawn twice"


def test_kmeans_pp_seeds_on_the_cpu(blobs):
    """k-means++ on the CPU draws, in every leaf, distinct rows of that leaf (a drawn row's distance is 0),
    the same ones on every run; a leaf drawing all its rows draws each once."""
    from rasterizer.kmeans import kmeans_pp
    x, w, starts, ks = _seed_case(blobs)
    seeds = kmeans_pp(np, x, w, None, starts, ks, 123)
    assert np.array_equal(seeds, kmeans_pp(np, x, w, None, starts, ks, 123))
    _assert_seeds_are_distinct_rows_of_their_leaf(seeds, x, starts, ks)
    # rows given through an order: the same seeds as the rows laid out leaf after leaf
    perm = np.random.default_rng(1).permutation(len(x))
    shuffled = np.empty_like(x)
    shuffled[perm] = x
    assert np.array_equal(kmeans_pp(np, shuffled, w[np.argsort(perm)], perm, starts, ks, 123), seeds)


@pytest.mark.parametrize("gpu_case", [pytest.param(0, marks=gpu)])
def test_kmeans_pp_seeds_on_the_gpu(blobs, gpu_case):
    """The GPU's k-means++ (one block per leaf, a warp-level draw) picks, in every leaf, distinct rows of
    that leaf: a row already drawn has distance 0 and can never be drawn again, also in leaves smaller
    than a block or holding repeated rows; the first seed is the CPU's (the same first draw)."""
    import cupy as cp

    from rasterizer.kmeans import distinct_rows, kmeans_pp
    x, w, starts, ks = _seed_case(blobs)
    seeds = kmeans_pp(cp, cp.asarray(x), cp.asarray(w), None, starts, ks, 123).get()
    again = kmeans_pp(cp, cp.asarray(x), cp.asarray(w), None, starts, ks, 123).get()
    cpu = kmeans_pp(np, x, w, None, starts, ks, 123)
    assert np.array_equal(seeds, again)
    # the GPU's grouping of equal rows is the CPU's
    dup = np.concatenate([x, x[::3], np.zeros((50, 45), np.float32)])
    gf, gi = distinct_rows(cp.asarray(dup))
    cf, ci = distinct_rows(dup)
    assert np.array_equal(gf, cf) and np.array_equal(gi, ci) and len(cf) == len(np.unique(x, axis=0)) + 1
    _assert_seeds_are_distinct_rows_of_their_leaf(seeds, x, starts, ks)
    offsets = np.concatenate([[0], np.cumsum(ks)])
    for leaf in range(len(ks)):
        assert np.array_equal(seeds[offsets[leaf]], cpu[offsets[leaf]])


# --------------------------------------------------------------------------- reading by content

def test_load_scene_opens_every_sog_layout(small_sog, tmp_path):
    path = small_sog[0]
    ref = sog.read_sog(path)
    folder = unzip(path, tmp_path / "unbundled")
    renamed = tmp_path / "scene.bin"
    shutil.copy(path, renamed)
    for p in (path, folder, folder / "meta.json", renamed):
        s = load_scene(p)
        assert np.array_equal(s.means, ref.means) and np.array_equal(s.sh, ref.sh)
        assert np.array_equal(s.quats, ref.quats) and np.array_equal(s.opacities, ref.opacities)
    with pytest.raises(SceneError, match=r"folder without a SOG meta\.json"):
        load_scene(tmp_path)


def _edit_meta(fn):
    def edit(m):
        meta = json.loads(m["meta.json"])
        fn(meta)
        m["meta.json"] = json.dumps(meta).encode()
    return edit


def _resize(name, w, h):
    def edit(m):
        m[name] = webp(np.zeros((h, w, 4), np.uint8))
    return edit


def _poke(name, channel, value):
    def edit(m):
        img = decode(m[name]).copy()
        img[0, 5, channel] = value
        m[name] = webp(img)
    return edit


MALFORMED = {
    "missing member": (lambda m: m.pop("quats.webp"), "no member 'quats.webp'"),
    "missing meta": (lambda m: m.pop("meta.json"), "no member 'meta.json'"),
    "bad JSON": (lambda m: m.update({"meta.json": b"{\"version\": 2,"}), "bad meta.json"),
    "not an object": (lambda m: m.update({"meta.json": b"[2]"}), "not a JSON object"),
    "version 1": (_edit_meta(lambda j: j.pop("version")), "version 1 is not supported"),
    "version 3": (_edit_meta(lambda j: j.update(version=3)), "unsupported SOG version 3"),
    "count above the images": (_edit_meta(lambda j: j.update(count=10**6)), "fewer than count"),
    "count not a number": (_edit_meta(lambda j: j.update(count="12")), "'count' must be"),
    "short codebook": (_edit_meta(lambda j: j["scales"].update(codebook=[0.0] * 10)), "scales.codebook"),
    "NaN in mins": (lambda m: m.update({"meta.json": m["meta.json"].replace(b'"mins":[', b'"mins":[NaN,', 1)}),
                    "means.mins"),
    "bad bands": (_edit_meta(lambda j: j["shN"].update(bands=4)), "shN.bands"),
    "wrong image size": (_resize("sh0.webp", 52, 44), "sh0.webp is 52x44"),
    "wrong palette width": (_resize("shN_centroids.webp", 64, 32), "shN_centroids.webp is 64x32"),
    "not an image": (lambda m: m.update({"scales.webp": b"RIFF0000WEBPVP8L garbage"}), "not a readable image"),
    "no image at all": (lambda m: m.update({"sh0.webp": bytes(64)}),
                        r"sh0.webp is not a readable image \(no image format Pillow knows\)$"),
    "bad quaternion mode": (_poke("quats.webp", 3, 17), "not a quaternion mode"),
    "label outside palette": (_edit_meta(lambda j: j["shN"].update(count=3)), "outside the palette of 3"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_bundle_one_line_exit_2(small_sog, tmp_path, case):
    edit, message = MALFORMED[case]
    bad = rebundle(small_sog[0], tmp_path / "bad.sog", edit)
    with pytest.raises(SceneError, match=message):
        load_scene(bad)
    r = subprocess.run([sys.executable, "-m", "rasterizer", "info", str(bad)], capture_output=True, text=True,
                       cwd=REPO, timeout=120, check=False)
    assert r.returncode == 2 and r.stdout == ""
    lines = [ln for ln in r.stderr.splitlines() if not ln[:4].isdigit()]   # drop timestamped log lines
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_truncated_bundle_and_missing_folder_file(small_sog, tmp_path):
    data = small_sog[0].read_bytes()
    for cut in (len(data) // 2, len(data) - 10):
        p = tmp_path / f"cut{cut}.sog"
        p.write_bytes(data[:cut])
        with pytest.raises(SceneError, match="truncated or corrupt"):
            load_scene(p)
    folder = unzip(small_sog[0], tmp_path / "u")
    (folder / "means_u.webp").unlink()
    with pytest.raises(SceneError, match="missing file"):
        load_scene(folder)
    folder = unzip(small_sog[0], tmp_path / "v")
    (folder / "meta.json").write_text(json.dumps({**json.loads((folder / "meta.json").read_text()),
                                                  "quats": {"files": ["../../etc/passwd"]}}))
    with pytest.raises(SceneError, match="leaves the SOG folder"):
        load_scene(folder / "meta.json")


def test_a_member_that_inflates_beyond_its_image_is_refused_unread(small_sog, tmp_path):
    """A zip bomb: means_l.webp replaced by 64 MiB of zeros that deflate to a few kB. Refused from the
    member's declared size, before anything is inflated."""
    import zipfile
    bomb = tmp_path / "bomb.sog"
    with zipfile.ZipFile(small_sog[0]) as src, zipfile.ZipFile(bomb, "w") as dst:
        for info in src.infolist():
            if info.filename == "means_l.webp":
                dst.writestr(info.filename, bytes(64 << 20), compress_type=zipfile.ZIP_DEFLATED)
            else:
                dst.writestr(info, src.read(info))
    assert bomb.stat().st_size < 2 * small_sog[0].stat().st_size + (1 << 20)
    with pytest.raises(SceneError, match=r"means_l\.webp is 67108864 bytes, more than"):
        load_scene(bomb)


# --------------------------------------------------------------------------- the CLI

def test_cli_convert_every_format(tmp_path):
    src = scene_path("loadersgl-train-1000.ply")

    def run(*args):
        return subprocess.run([sys.executable, "-m", "rasterizer", "convert", *map(str, args)],
                              capture_output=True, text=True, cwd=REPO, timeout=300, check=False)

    r = run(src, tmp_path / "a.sog", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert len(load_scene(tmp_path / "a.sog")) == 1000
    # PLY → .splat goes straight from the file: the pipeline's converter, byte for byte
    assert run(src, tmp_path / "a.splat").returncode == 0
    ply_to_splat(src, tmp_path / "ref.splat")
    assert (tmp_path / "a.splat").read_bytes() == (tmp_path / "ref.splat").read_bytes()
    # SOG → .ply and → .splat: the decoded values
    assert run(tmp_path / "a.sog", tmp_path / "b.ply").returncode == 0
    assert run(tmp_path / "a.sog", tmp_path / "b.splat").returncode == 0
    dec, back = sog.read_sog(tmp_path / "a.sog"), load_scene(tmp_path / "b.ply")
    assert np.array_equal(dec.means, back.means) and np.array_equal(dec.sh, back.sh)
    assert len(load_scene(tmp_path / "b.splat")) == 1000
    bad = run(src, tmp_path / "c.txt")
    assert bad.returncode == 2 and "extension must be one of .sog, .splat, .ply" in bad.stderr
    assert not (tmp_path / "c.txt").exists()


# --------------------------------------------------------------------------- the oracle

@pytest.fixture(scope="session")
def splat_transform():
    """Run the pinned splat-transform CLI (CPU k-means); skip where node/npm or the package are missing."""
    try:
        splat_transform_cli()
    except ReferenceUnavailable as e:
        pytest.skip(str(e))

    def run(*args):
        r = run_splat_transform(args)
        assert r.returncode == 0, r.stderr[-2000:]
    return run


def ply_as_scene(path: Path) -> dict[str, np.ndarray]:
    v = PlyData.read(str(path))["vertex"].data
    return {name: np.asarray(v[name], np.float32) for name in v.dtype.names}


def scene_columns(s: Scene) -> dict[str, np.ndarray]:
    n = len(s)
    cols = {"x": s.means[:, 0], "y": s.means[:, 1], "z": s.means[:, 2], "opacity": s.opacities}
    for i in range(3):
        cols[f"scale_{i}"], cols[f"f_dc_{i}"] = s.scales[:, i], s.sh[:, 0, i]
    for i in range(4):
        cols[f"rot_{i}"] = s.quats[:, i]
    rest = s.sh[:, 1:].transpose(0, 2, 1).reshape(n, -1)
    for i in range(rest.shape[1]):
        cols[f"f_rest_{i}"] = rest[:, i]
    return cols


def assert_same_values(ours: Scene, theirs: dict[str, np.ndarray], what: str):
    """Our decode equals splat-transform's, to the bit or one float32 rounding."""
    for name, val in scene_columns(ours).items():
        ref = theirs[name]
        ulps = np.abs(ref.astype(np.float64) - val) / np.spacing(np.maximum(np.abs(ref), 1e-30))
        assert ulps.max() <= 1, f"{what}: {name} differs by {ulps.max():.1f} ulp"
    assert set(theirs) == set(scene_columns(ours)), f"{what}: property sets differ"


@pytest.fixture(scope="module")
def oracle_sh3(splat_transform, tmp_path_factory):
    """The real SH-3 scene written by both tools, and each bundle decoded by splat-transform."""
    d = tmp_path_factory.mktemp("oracle")
    src = scene_path("loadersgl-train-1000.ply")
    sog.write_sog(load_scene(src), d / "ours.sog", device="cpu")
    splat_transform(src, d / "theirs.sog")
    splat_transform(d / "ours.sog", d / "ours-by-them.ply")
    splat_transform(d / "theirs.sog", d / "theirs-by-them.ply")
    return src, d


def test_oracle_reads_our_sog_as_we_do(oracle_sh3):
    src, d = oracle_sh3
    assert_same_values(sog.read_sog(d / "ours.sog"), ply_as_scene(d / "ours-by-them.ply"), "our .sog")
    # and what it reads is the source within each field's quantisation
    assert_within_quantisation(load_scene(d / "ours-by-them.ply"), in_texel_order(load_scene(src)), d / "ours.sog")


def test_we_read_the_oracles_sog_as_it_does(oracle_sh3):
    _, d = oracle_sh3
    assert_same_values(sog.read_sog(d / "theirs.sog"), ply_as_scene(d / "theirs-by-them.ply"), "their .sog")


def test_same_images_as_the_oracle_but_the_palette(oracle_sh3):
    """Same order, codebooks and bytes as splat-transform for everything but the SH palette (our k-means)."""
    _, d = oracle_sh3
    za, zb = zipfile.ZipFile(d / "ours.sog"), zipfile.ZipFile(d / "theirs.sog")
    ma, mb = json.loads(za.read("meta.json")), json.loads(zb.read("meta.json"))
    assert ma["count"] == mb["count"] and ma["shN"]["count"] == mb["shN"]["count"]
    assert ma["means"]["mins"] == mb["means"]["mins"] and ma["means"]["maxs"] == mb["means"]["maxs"]
    assert ma["scales"]["codebook"] == mb["scales"]["codebook"] and ma["sh0"]["codebook"] == mb["sh0"]["codebook"]
    n = ma["count"]
    for name in ("means_l.webp", "means_u.webp", "quats.webp", "scales.webp", "sh0.webp"):
        a, b = decode(za.read(name)), decode(zb.read(name))
        assert a.shape == b.shape
        # their encoder may rewrite the RGB of the transparent padding; the Gaussians' pixels agree
        assert np.array_equal(a.reshape(-1, 4)[:n], b.reshape(-1, 4)[:n]), name


def _render_psnr(scene: Scene, ref_images: dict, cams: dict) -> float:
    """PSNR against the reference images over all the cameras together (their pooled squared error)."""
    prepared = Prepared(scene, "cpu")
    mse = np.mean([10 ** (-psnr(prepared.render(cam, (0, 0, 0)).rgb, ref_images[k]) / 10) for k, cam in cams.items()])
    return float(-10 * np.log10(mse))


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if "500k" in n else n
                                  for n in SCENE_FILES])
def test_render_at_least_as_good_as_the_oracle(name, splat_transform, tmp_path):
    """Decoded SOG against the source at the preview cameras and one inside the scene, both tools side by side.

    splat-transform's palette comes from random points (``Math.random``), so where there is one its
    figure is the median of three runs; without SH bands both tools write the same values.
    """
    scene = load_scene(scene_path(name))
    ply = save_ply(scene, tmp_path / "src.ply")   # one input for both tools (a .splat is read differently)
    sog.write_sog(scene, tmp_path / "ours.sog", device="cpu")
    allcams = cameras_for(scene, size=(160, 120) if len(scene) > 200_000 else (240, 180))
    cams = {k: allcams[k] for k in ("oblique", "top", "inside")}
    prepared = Prepared(scene, "cpu")
    ref = {k: prepared.render(cam, (0, 0, 0)).rgb for k, cam in cams.items()}
    ours = _render_psnr(sog.read_sog(tmp_path / "ours.sog"), ref, cams)
    theirs = []
    for _ in range(3 if scene.sh_degree > 0 else 1):
        splat_transform(ply, tmp_path / "theirs.sog")
        theirs.append(_render_psnr(sog.read_sog(tmp_path / "theirs.sog"), ref, cams))
    median = float(np.median(theirs))
    print(f"{name}: PSNR against the source over {len(cams)} cameras: ours {ours:.2f} dB, "
          f"splat-transform {', '.join(f'{t:.2f}' for t in theirs)} dB")
    assert ours >= median - 0.1, f"ours {ours:.2f} dB < splat-transform {median:.2f} dB"
    assert ours > 30
