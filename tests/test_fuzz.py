"""A deterministic fuzz of every input the rasterizer's entry point reads (issue 10 item 13).

Cases are generated from one seed: PLY headers and bodies (lying and malformed counts, header
lines deleted, duplicated, retyped, bytes flipped, truncation at every region, extreme values)
over binary little/big-endian, ASCII, double-typed and multi-element files; ``.splat`` sizes and
contents; camera-path JSON; command-line values. Each case must end in ONE of:

- a clean error: exit code 2, exactly one ``error:`` line on stderr, no traceback, and no
  output folder or staging folder left behind;
- a sane result: exit code 0, the images asked for, at the size asked for.

Most cases run the real entry point in-process (``rasterizer.cli.main``); a handful run as real
processes to prove the exit code and the absence of a traceback end to end.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from PIL import Image
from plyfile import PlyData, PlyElement

from rasterizer.cli import main
from rasterizer.errors import SceneError
from rasterizer.scene import load_scene

SEED = 20261110
N = 24            # Gaussians in each base PLY
SIZE = (48, 32)   # preview size of the cases that load


# --------------------------------------------------------------------------- base files

PROPS = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
         "rot_0", "rot_1", "rot_2", "rot_3"]


def _vertices(degree=0, dtype="f4") -> np.ndarray:
    rng = np.random.default_rng(1)
    rest = [f"f_rest_{i}" for i in range(3 * ((degree + 1) ** 2 - 1))]
    arr = np.zeros(N, [(p, dtype) for p in PROPS[:6] + rest + PROPS[6:]])
    for p in arr.dtype.names:
        arr[p] = rng.normal(0.0, 0.5, N)
    for p in ("scale_0", "scale_1", "scale_2"):
        arr[p] = rng.normal(-2.5, 0.3, N)
    arr["opacity"] = 2.0
    return arr


def _ply_bytes(base: str) -> bytes:
    face = np.empty(3, [("vertex_indices", "O")])
    face["vertex_indices"] = [np.array([0, 1, 2], np.int32)] * 3
    els = {"le_sh0": [_vertices()], "be_sh1": [_vertices(1)], "ascii_sh0": [_vertices()],
           "le_f8": [_vertices(dtype="f8")], "le_face_after": [_vertices(), face],
           "le_elem_before": [np.zeros(2, [("a", "f8"), ("b", "u1")]), _vertices()],
           "le_list_before": [face, _vertices(2)]}[base]
    if len(els) == 1:
        names = {0: "vertex"}
    elif base == "le_face_after":
        names = {0: "vertex", 1: "face"}
    else:
        names = {0: "camera" if base == "le_elem_before" else "face", 1: "vertex"}
    ply = PlyData([PlyElement.describe(a, names[i]) for i, a in enumerate(els)], text=base.startswith("ascii"),
                  byte_order=">" if base.startswith("be") else "<")
    buf = io.BytesIO()
    ply.write(buf)
    return buf.getvalue()


BASES = ("le_sh0", "be_sh1", "ascii_sh0", "le_f8", "le_face_after", "le_elem_before", "le_list_before")
_BASE_BYTES = {b: _ply_bytes(b) for b in BASES}


def _split(data: bytes) -> tuple[list[bytes], bytes]:
    end = data.index(b"end_header\n") + len(b"end_header\n")
    return data[:end].split(b"\n")[:-1], data[end:]


def _join(lines: list[bytes], body: bytes) -> bytes:
    return b"\n".join(lines) + b"\n" + body


# --------------------------------------------------------------------------- case generation

COUNTS = ["-1000", "-1", "0", "23", "25", "1000000000", "1000000000000", "2147483648", str(2 ** 63),
          str(2 ** 64 + 24), "1" + "0" * 30, "abc", "1e3", "0x18", ""]
TYPES = [b"char", b"uchar", b"short", b"int", b"float", b"double", b"float128", b"list uchar float", b"bogus"]
FORMATS = [b"format ascii 1.0", b"format binary_big_endian 1.0", b"format binary_little_endian 1.0",
           b"format binary_middle_endian 1.0", b"format binary_little_endian 2.0", b"format"]
EXTREMES = [1e30, -1e30, 3.4e38, -3.4e38, 1e-45, float("nan"), float("inf"), -float("inf"), 0.0, 1e300]


def _ply_cases():
    rng = np.random.default_rng(SEED)
    cases = []
    for base in BASES:
        for c in COUNTS:
            cases.append(("vertex count", base, c))
        lines, body = _split(_BASE_BYTES[base])
        hl = len(_join(lines, b""))
        for pos in sorted({3, hl // 2, hl - 1, hl, hl + 1, hl + len(body) // 2, hl + len(body) - 1,
                           int(rng.integers(4, hl + len(body)))}):
            cases.append(("truncate", base, int(pos)))
        for _ in range(10):
            op = str(rng.choice(["delete", "duplicate", "swap", "retype", "rename", "format", "garbage",
                                 "no end_header", "crlf", "non-ascii"]))
            cases.append(("header", base, op, int(rng.integers(1, 1 << 30))))
        for k in (1, 3, 8, 20, 60):
            cases.append(("header flips", base, k, int(rng.integers(1, 1 << 30))))
        for k in (1, 10, 100, 1000):
            cases.append(("body flips", base, k, int(rng.integers(1, 1 << 30))))
        cases.append(("append junk", base, int(rng.integers(1, 5000))))
        if base[:2] in ("le", "be"):
            cases.append(("byte order", base))   # the body read with the other byte order: finite garbage
    for c in COUNTS:
        cases.append(("face count", "le_face_after", c))
    for prop in ("xyz", "opacity", "scale_0", "rot", "f_dc_0"):
        for v in EXTREMES:
            cases.append(("extreme", "le_sh0", prop, v))
    for v in (1e30, float("nan"), 1e300):
        cases.append(("extreme", "le_f8", "xyz", v))
        cases.append(("extreme", "be_sh1", "scale_1", v))
    return cases


def _make_ply(case) -> bytes:
    kind, base = case[0], case[1]
    data = _BASE_BYTES[base]
    lines, body = _split(data)
    if kind in ("vertex count", "face count"):
        name = b"element vertex" if kind == "vertex count" else b"element face"
        i = next(i for i, ln in enumerate(lines) if ln.startswith(name))
        lines[i] = name + b" " + case[2].encode()
        return _join(lines, body)
    if kind == "truncate":
        return data[:case[2]]
    if kind == "append junk":
        return data + np.random.default_rng(case[2]).bytes(case[2])
    if kind == "header":
        op, rng = case[2], np.random.default_rng(case[3])
        i = int(rng.integers(1, len(lines) - 1))
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = int(rng.integers(1, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "retype":
            props = [k for k, ln in enumerate(lines) if ln.startswith(b"property")]
            k = props[int(rng.integers(len(props)))]
            lines[k] = b"property " + TYPES[int(rng.integers(len(TYPES)))] + b" " + lines[k].split()[-1]
        elif op == "rename":
            props = [k for k, ln in enumerate(lines) if ln.startswith(b"property")]
            k = props[int(rng.integers(len(props)))]
            lines[k] = lines[k].rsplit(b" ", 1)[0] + b" renamed_" + lines[k].rsplit(b" ", 1)[1]
        elif op == "format":
            lines[1] = FORMATS[int(rng.integers(len(FORMATS)))]
        elif op == "garbage":
            lines.insert(i, rng.bytes(int(rng.integers(1, 40))).replace(b"\n", b" "))
        elif op == "no end_header":
            lines = lines[:-1]
        elif op == "crlf":
            return b"\r\n".join(lines) + b"\r\n" + body
        elif op == "non-ascii":
            lines[i] = lines[i] + "é".encode()
        return _join(lines, body)
    if kind == "header flips":
        rng = np.random.default_rng(case[3])
        head = bytearray(_join(lines, b""))
        for _ in range(case[2]):
            head[int(rng.integers(0, len(head)))] = int(rng.integers(0, 256))
        return bytes(head) + body
    if kind == "body flips":
        rng = np.random.default_rng(case[3])
        b = bytearray(body)
        for _ in range(case[2]):
            b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
        return _join(lines, bytes(b))
    if kind == "byte order":
        swapped = {b"format binary_little_endian 1.0": b"format binary_big_endian 1.0",
                   b"format binary_big_endian 1.0": b"format binary_little_endian 1.0"}
        return _join([swapped.get(ln, ln) for ln in lines], body)
    if kind == "extreme":
        prop, v = case[2], case[3]
        ply = PlyData.read(io.BytesIO(data))
        arr = ply["vertex"].data.copy()
        for p in {"xyz": ("x", "y", "z"), "rot": ("rot_0", "rot_1", "rot_2", "rot_3")}.get(prop, (prop,)):
            with np.errstate(over="ignore"):
                arr[p] = v
        out = io.BytesIO()
        PlyData([PlyElement.describe(arr, "vertex")], text=ply.text, byte_order=ply.byte_order).write(out)
        return out.getvalue()
    raise AssertionError(kind)


PLY_CASES = _ply_cases()


def _splat_cases():
    rng = np.random.default_rng(SEED + 1)
    cases = [("zeros", n) for n in (0, 1, 31, 32, 33, 63, 64, 32 * 500 + 5)]
    cases += [("random", n, int(rng.integers(1, 1 << 30))) for n in (32, 320, 32 * 2000, 32 * 2000 + 16)]
    cases += [("extreme", v) for v in (1e30, 3.4e38, float("nan"), float("inf"), 0.0, -1.0)]
    cases += [("ply inside", 0)]
    return cases


def _make_splat(case) -> bytes:
    if case[0] == "zeros":
        return b"\0" * case[1]
    if case[0] == "random":
        return np.random.default_rng(case[2]).bytes(case[1])
    if case[0] == "ply inside":
        return _BASE_BYTES["le_sh0"]
    rec = np.zeros(50, [("pos", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
    rec["pos"] = np.random.default_rng(3).normal(0, 1, (50, 3))
    rec["scale"], rec["rgba"], rec["rot"] = 0.05, 200, [255, 128, 128, 128]
    with np.errstate(over="ignore"):
        rec["pos"][:, 0] = case[1]
        rec["scale"][::2, 2] = case[1]
    return rec.tobytes()


SPLAT_CASES = _splat_cases()

JSON_VALUES = ["true", "false", "null", "0", "-1", "1.5", "1e308", "1e400", "9" * 400, "NaN", "-Infinity",
               '"x"', '"64"', "[]", "{}", "[1]", "[" * 5000 + "]" * 5000, "16384", "1000000000000", "64", "64.0"]
FIELDS = ["render_width", "render_height", "camera_type", "camera_path", "fps", "seconds", "keyframes",
          "0.fov", "0.camera_to_world", "0.aspect", "0.render_time", "0.camera_to_world.0", "0.camera_to_world.5",
          "0.camera_to_world.15", "0.ortho_height", "1"]
CAMERA_TYPES = ["perspective", "orthographic", "fisheye", "equirectangular", "omnidirectional", "vr180_l", "",
                "PERSPECTIVE"]


def _camera_cases():
    rng = np.random.default_rng(SEED + 2)
    cases = [("set", f, JSON_VALUES[int(rng.integers(len(JSON_VALUES)))]) for f in FIELDS for _ in range(4)]
    cases += [("delete", f) for f in FIELDS]
    cases += [("type", t, bool(ortho)) for t in CAMERA_TYPES for ortho in (0, 1)]
    cases += [("extra", k) for k in ("zoom", "crop", "source", "render_time")]
    return cases


def _make_camera_path(case) -> str:
    c2w = np.eye(4)
    c2w[:3, 3] = [0.0, 0.0, 3.0]
    cam = {"camera_to_world": c2w.ravel().tolist(), "fov": 50.0, "aspect": 1.5}
    doc = {"camera_type": "perspective", "render_width": 48, "render_height": 32, "fps": 30, "seconds": 1,
           "camera_path": [cam, dict(cam)]}
    placeholder = "@@VALUE@@"
    if case[0] == "type":
        doc["camera_type"] = case[1]
        if case[2]:
            for c in doc["camera_path"]:
                c["ortho_height"] = 2.0
        return json.dumps(doc)
    if case[0] == "extra":
        doc[case[1]] = {"a": 1}
        doc["camera_path"][0][case[1]] = 0.5
        return json.dumps(doc)
    parts = case[1].split(".")
    target = doc if not parts[0].isdigit() else doc["camera_path"]
    keys = parts if not parts[0].isdigit() else [int(parts[0])] + parts[1:]
    for k in keys[:-1]:
        target = target[int(k) if str(k).isdigit() and isinstance(target, list) else k]
    last = keys[-1]
    last = int(last) if isinstance(target, list) else last
    if case[0] == "delete":
        if isinstance(target, list) or last in target:
            del target[last]
        return json.dumps(doc)
    target[last] = placeholder
    return json.dumps(doc).replace(f'"{placeholder}"', case[2])


CAMERA_CASES = _camera_cases()

ARG_POOLS = {
    "--size": ["0x0", "1x1", "-1x5", "48x32", "48X32", " 48x32 ", "48x32x2", "x", "", "1e3x5", "99999999999x1",
               "16383x1", "16384x1", "8192x8193", "٣x٣", "²x2", "48 x 32"],
    "--up": ["y", "-y", "+z", "Y", "-X", "w", "up", "0,1,0", "1,2,3,4,5", "", "-", "--", "nan,0,0", "0,0,0", "-z"],
    "--quality": ["0", "1", "100", "101", "500", "-5", "abc", "1e2", "", "٣"],
    "--background": ["0,0,0", "1,1,1", "1,2", "nan,0,0", "inf,0,0", "-0.1,0,0", "", "a,b,c", "0.5,0.5,0.5,0.5"],
    "--format": ["jpg", "png", "webp", "gif", ""],
    "--views": [["top"], ["angle"], ["top", "angle"], ["side"], []],
}


def _arg_cases():
    rng = np.random.default_rng(SEED + 3)
    cases = [(opt, i) for opt, pool in ARG_POOLS.items() for i in range(len(pool))]
    for _ in range(25):
        cases.append(("mix",) + tuple(int(rng.integers(len(ARG_POOLS[o]))) for o in ARG_POOLS))
    cases += [("scene", s) for s in ("", "missing.ply", ".", "/dev/null", "/dev/zero", "dir.ply")]
    return cases


ARG_CASES = _arg_cases()


# --------------------------------------------------------------------------- checking outcomes

def _cli(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    got = capsys.readouterr()
    return code, got.out, got.err


def _check(code: int, err: str, work, out, images: dict[str, tuple[int, int]] | None = None):
    """A clean error (2, one line, nothing left) or a sane result (0, the images at their size)."""
    assert "Traceback" not in err, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error")]
    leftovers = [p.name for p in work.iterdir() if p.name.startswith(".")]
    assert not leftovers, leftovers
    if code == 2:
        assert len(errors) == 1, err
        assert not out.exists(), sorted(out.iterdir())
        return "error"
    assert code == 0, (code, err)
    assert not errors, err
    for name, size in (images or {}).items():
        with Image.open(out / name) as im:
            assert im.size == size, (name, im.size)
            im.load()
    return "ok"


def _ids(cases):
    return ["-".join(str(x)[:24] for x in c) for c in cases]


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("case", PLY_CASES, ids=_ids(PLY_CASES))
def test_fuzz_ply(tmp_path, capsys, case):
    path = tmp_path / "scene.ply"
    path.write_bytes(_make_ply(case))
    try:
        scene = load_scene(path)
    except SceneError as e:
        assert str(path) in str(e) and "\n" not in str(e)
        scene = None
    else:
        assert len(scene) >= 1
        for a in (scene.means, scene.scales, scene.quats, scene.opacities, scene.sh):
            assert a.dtype == np.float32 and np.isfinite(a).all()
    out = tmp_path / "out"
    code, _, err = _cli(capsys, "preview", path, "--out", out, "--size", "48x32", "--backend", "cpu")
    outcome = _check(code, err, tmp_path, out, {"preview_top.jpg": SIZE, "preview_angle.jpg": SIZE})
    if scene is None:
        assert outcome == "error"


VALUE_CASES = [c for c in PLY_CASES if c[0] in ("extreme", "body flips", "byte order")]


@pytest.mark.filterwarnings("error::RuntimeWarning")   # overflow on the way is handled, not printed
@pytest.mark.parametrize("case", VALUE_CASES, ids=_ids(VALUE_CASES))
def test_fuzz_values_through_info_and_sog(tmp_path, capsys, case):
    """Garbled values (extremes, flipped body bytes, the other byte order) through the commands that
    analyse and re-encode a scene: ``info`` (the layout analysis) and ``convert`` to SOG (k-means,
    quantisation). A clean error or a result, never an internal error (exit 1)."""
    path = tmp_path / "scene.ply"
    path.write_bytes(_make_ply(case))
    code, out, err = _cli(capsys, "info", path)
    _check(code, err, tmp_path, tmp_path / "absent")
    if code == 0:
        assert "class:" in out
    sog = tmp_path / "scene.sog"
    code, _, err = _cli(capsys, "convert", path, sog)
    _check(code, err, tmp_path, sog)
    if code == 0:
        again = load_scene(sog)
        assert len(again) >= 1 and all(np.isfinite(a).all() for a in (again.means, again.scales, again.quats,
                                                                          again.opacities, again.sh))


@pytest.mark.parametrize("case", SPLAT_CASES, ids=_ids(SPLAT_CASES))
def test_fuzz_splat(tmp_path, capsys, case):
    path = tmp_path / "scene.splat"
    path.write_bytes(_make_splat(case))
    out = tmp_path / "out"
    code, _, err = _cli(capsys, "preview", path, "--out", out, "--size", "48x32", "--backend", "cpu",
                        "--format", "png")
    _check(code, err, tmp_path, out, {"preview_top.png": SIZE, "preview_angle.png": SIZE})


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory):
    p = tmp_path_factory.mktemp("scene") / "ok.ply"
    p.write_bytes(_BASE_BYTES["le_sh0"])
    return p


@pytest.mark.parametrize("case", CAMERA_CASES, ids=_ids(CAMERA_CASES))
def test_fuzz_camera_path(tmp_path, capsys, small_scene, case):
    path = tmp_path / "cams.json"
    text = _make_camera_path(case)
    path.write_text(text)
    out = tmp_path / "frames"
    code, _, err = _cli(capsys, "render", small_scene, "--camera-path", path, "--out", out, "--backend", "cpu")
    if _check(code, err, tmp_path, out) == "ok":
        doc = json.loads(text)
        frames = sorted(out.iterdir())
        assert [p.name for p in frames] == [f"{i:05d}.png" for i in range(len(doc["camera_path"]))]
        for p in frames:
            with Image.open(p) as im:
                assert im.size == (int(doc["render_width"]), int(doc["render_height"]))


@pytest.mark.parametrize("case", ARG_CASES, ids=_ids(ARG_CASES))
def test_fuzz_command_line(tmp_path, capsys, small_scene, case):
    (tmp_path / "dir.ply").mkdir()
    args, chosen = [], {}
    if case[0] == "scene":
        scene = case[1] if case[1].startswith("/") or case[1] == "" else tmp_path / case[1]
    else:
        scene = small_scene
        picks = dict(zip(ARG_POOLS, case[1:])) if case[0] == "mix" else {case[0]: case[1]}
        for opt, i in picks.items():
            chosen[opt] = ARG_POOLS[opt][i]
            args += [opt, *chosen[opt]] if opt == "--views" else [opt, chosen[opt]]
    out = tmp_path / "out"
    code, stdout, err = _cli(capsys, "preview", scene, "--out", out, "--backend", "cpu", *args)
    w, h = SIZE_OF.get(chosen.get("--size", "1280x720"), (None, None))
    fmt = chosen.get("--format", "jpg")
    views = chosen.get("--views", ["top", "angle"])
    images = {f"preview_{v}.{fmt}": (w, h) for v in views} if w else None
    if _check(code, err, tmp_path, out, images) == "ok":
        assert sorted(stdout.split()) == sorted(str(out / n) for n in images)


SIZE_OF = {"1280x720": (1280, 720), "1x1": (1, 1), "48x32": (48, 32), "48X32": (48, 32), " 48x32 ": (48, 32),
           "16383x1": (16383, 1), "48 x 32": (48, 32)}


# --------------------------------------------------------------------------- real processes

PROCESS_CASES = [
    (["preview", "{scene}", "--out", "{out}", "--up", "up"], 2),
    (["preview", "{scene}", "--out", "{out}", "--up", "-y", "--size", "48x32", "--backend", "cpu"], 0),
    (["preview", "{scene}", "--out", "{out}", "--size", "16384x16384"], 2),
    (["preview", "{scene}", "--out", "{out}", "--quality", "500"], 2),
    (["preview", "", "--out", "{out}"], 2),
    (["render", "{scene}", "--camera-path", "{nested}", "--out", "{out}"], 2),
    (["info", "{lie}"], 2),
    (["preview", "{far}", "--out", "{out}"], 2),
]


@pytest.mark.parametrize("args, expect", PROCESS_CASES, ids=[" ".join(a[:1] + a[3:6]) for a, _ in PROCESS_CASES])
def test_fuzz_cases_as_real_processes(tmp_path, small_scene, args, expect):
    nested = tmp_path / "nested.json"
    nested.write_text('{"render_width": 48, "render_height": 32, "camera_path": ' + "[" * 100_000 + "]" * 100_000 + "}")
    lie = tmp_path / "lie.ply"
    lie.write_bytes(_make_ply(("vertex count", "le_sh0", "1000000000000")))
    far = tmp_path / "far.ply"
    far.write_bytes(_make_ply(("extreme", "le_sh0", "xyz", 1e30)))
    out = tmp_path / "out"
    argv = [a.format(scene=small_scene, out=out, nested=nested, lie=lie, far=far) for a in args]
    r = subprocess.run([sys.executable, "-m", "rasterizer", *argv], capture_output=True, text=True, cwd=REPO,
                       timeout=300)
    assert r.returncode == expect, r.stderr
    _check(r.returncode, r.stderr, tmp_path, out)
