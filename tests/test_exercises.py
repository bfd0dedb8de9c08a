"""The exercise checker (mistral_np/exercises/, ``mistral-np exercise``): it accepts the project's own functions
(and other correct ways to write them), and rejects planted mistakes with a message that names what is wrong."""

import textwrap

import numpy as np
import pytest

from mistral_np.cli import main
from mistral_np.errors import InvalidArgumentError, PathNotFoundError
from mistral_np.exercises import EXERCISES, check, check_file, exercise

NAMES = ["rmsnorm", "rope", "window_mask", "rolling_cache", "q4_0"]


def test_the_five_exercises_and_their_solutions():
    assert list(EXERCISES) == NAMES
    for name, ex in EXERCISES.items():
        result = check(name, ex.solve)
        assert result.passed, result.format()
        assert len(result.outcomes) == len(ex.checks) >= 4
        assert f"all {len(ex.checks)} checks passed" in result.format()
        module, function = ex.solution.split(":")
        assert module.startswith("mistral_np/") and function.split(".")[-1] == ex.solve.__name__


# Other correct ways to write each piece: the checker must not insist on the project's exact code.
ALTERNATIVES = {
    "rmsnorm": """
        def rms_norm(x, weight, eps):
            return weight * x / np.sqrt((x ** 2).sum(axis=-1, keepdims=True) / x.shape[-1] + eps)
    """,
    "rope": """
        def apply_rope(x, cos, sin):
            half = x.shape[-1] // 2
            rotate_half = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)   # transformers' way
            c = np.concatenate([cos, cos], axis=-1)[:, None, :]
            s = np.concatenate([sin, sin], axis=-1)[:, None, :]
            return x * c + rotate_half * s
    """,
    "window_mask": """
        def sliding_window_causal_mask(q_pos, k_pos, window):
            out = np.zeros((len(q_pos), len(k_pos)), dtype=int)
            for t, i in enumerate(q_pos):
                for s, j in enumerate(k_pos):
                    out[t, s] = j >= 0 and j <= i and (window is None or i - j < window)
            return out
    """,
    "rolling_cache": """
        def kv_cache_update(cache, layer, k, v, positions):      # always: cached + chunk, then write
            valid = cache.slot_pos[layer] >= 0
            out = (np.concatenate([cache.k[layer][valid], k]), np.concatenate([cache.v[layer][valid], v]),
                   np.concatenate([cache.slot_pos[layer][valid], positions]))
            keep = slice(max(0, len(positions) - cache.slots), len(positions))
            s = positions[keep] % cache.slots
            cache.k[layer, s], cache.v[layer, s], cache.slot_pos[layer, s] = k[keep], v[keep], positions[keep]
            cache.seen[layer] = positions[-1] + 1
            return out
    """,
    "q4_0": """
        def dequantize_q4_0(packed, shape):
            out = np.empty(shape, dtype=np.float32)
            flat = out.reshape(-1)
            for b, block in enumerate(packed.reshape(-1, 18)):
                d = np.float32(np.frombuffer(block[:2].tobytes(), dtype="<f2")[0])
                for j in range(16):
                    flat[32 * b + j] = d * ((int(block[2 + j]) & 15) - 8)
                    flat[32 * b + j + 16] = d * ((int(block[2 + j]) >> 4) - 8)
            return out
    """,
}


def write(tmp_path, code, name="mine.py"):
    path = tmp_path / name
    path.write_text("import numpy as np\n\n" + textwrap.dedent(code))
    return str(path)


@pytest.mark.parametrize("name", NAMES)
def test_other_correct_implementations_pass(name, tmp_path):
    result = check_file(name, write(tmp_path, ALTERNATIVES[name]))
    assert result.passed, result.format()


# Planted mistakes: (exercise, code, phrases the message must contain).
PLANTED = [
    ("rope", """
        def apply_rope(x, cos, sin):                      # interleaved pairs
            out = np.empty_like(x)
            c, s = cos[:, None, :], sin[:, None, :]
            out[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s
            out[..., 1::2] = x[..., 1::2] * c + x[..., 0::2] * s
            return out
     """, ["half-split pairs", "token 1 (position 1)", "interleaved layout"]),
    ("rope", """
        def apply_rope(x, cos, sin):                      # turns the other way
            h = x.shape[-1] // 2
            c, s = cos[:, None, :], sin[:, None, :]
            return np.concatenate([x[..., :h] * c + x[..., h:] * s, x[..., h:] * c - x[..., :h] * s], axis=-1)
     """, ["turn the other way"]),
    ("rope", """
        def apply_rope(x, cos, sin):                      # heads and elements swapped
            h = x.shape[-1] // 2
            c, s = cos[:, None, :], sin[:, None, :]
            y = np.concatenate([x[..., :h] * c - x[..., h:] * s, x[..., h:] * c + x[..., :h] * s], axis=-1)
            return y.transpose(0, 2, 1)
     """, ["wrong shape", "expected (5, 3, 8) (5 tokens, 3 heads, 8 elements), got (5, 8, 3)", "another order"]),
    ("rope", """
        def apply_rope(x, cos, sin):                      # rotates in place
            h = x.shape[-1] // 2
            c, s = cos[:, None, :], sin[:, None, :]
            x1, x2 = x[..., :h].copy(), x[..., h:].copy()
            x[..., :h], x[..., h:] = x1 * c - x2 * s, x2 * c + x1 * s
            return x
     """, ["changed its argument x in place"]),
    ("window_mask", """
        def sliding_window_causal_mask(q_pos, k_pos, window):     # W + 1 keys
            d = q_pos[:, None] - k_pos[None, :]
            m = (d >= 0) & (k_pos[None, :] >= 0)
            return m if window is None else m & (d <= window)
     """, ["query at position 3 (row 3), key at position 0", "i - j = 3, W = 3", "expected False, got True",
           "one key too wide"]),
    ("window_mask", """
        def sliding_window_causal_mask(q_pos, k_pos, window):     # empty slots visible
            d = q_pos[:, None] - k_pos[None, :]
            return (d >= 0) if window is None else (d >= 0) & (d < window)
     """, ["an empty slot", "let empty cache slots through"]),
    ("rmsnorm", """
        def rms_norm(x, weight, eps):                             # eps outside the square root
            return x / (np.sqrt(np.mean(x * x, axis=-1, keepdims=True)) + eps) * weight
     """, ["eps inside the square root", "eps outside the square root"]),
    ("rmsnorm", """
        def rms_norm(x, weight, eps):                             # over the wrong axis
            return x / np.sqrt(np.mean(x * x, axis=0, keepdims=True) + eps) * weight
     """, ["each token is normalized on its own", "token 0, channel", "average over the tokens (axis 0)"]),
    ("rmsnorm", """
        def rms_norm(x, weight, eps):                             # computes in float64
            return (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight).astype(np.float64)
     """, ["the dtype is float64, expected float32"]),
    ("q4_0", """
        def dequantize_q4_0(packed, shape):                        # neighbouring nibbles
            b = packed.reshape(-1, 18)
            d = b[:, :2].copy().view(np.float16)[:, 0].astype(np.float32)
            q = np.stack([b[:, 2:] & 15, b[:, 2:] >> 4], axis=2).reshape(len(b), 32).astype(np.float32) - 8
            return (d[:, None] * q).reshape(shape)
     """, ["element 1, the low nibble of byte 3", "element 2j in the low nibble", "element j + 16 in the high"]),
    ("q4_0", """
        def dequantize_q4_0(packed, shape):                        # forgets the -8
            b = packed.reshape(-1, 18)
            d = b[:, :2].copy().view(np.float16)[:, 0].astype(np.float32)
            q = np.concatenate([b[:, 2:] & 15, b[:, 2:] >> 4], axis=1).astype(np.float32)
            return (d[:, None] * q).reshape(shape)
     """, ["forget to subtract 8"]),
    ("rolling_cache", """
        def kv_cache_update(cache, layer, k, v, positions):        # always writes first
            keep = slice(max(0, len(positions) - cache.slots), len(positions))
            s = positions[keep] % cache.slots
            cache.k[layer, s], cache.v[layer, s], cache.slot_pos[layer, s] = k[keep], v[keep], positions[keep]
            cache.seen[layer] = positions[-1] + 1
            valid = cache.slot_pos[layer] >= 0
            return cache.k[layer][valid], cache.v[layer][valid], cache.slot_pos[layer][valid]
     """, ["the query at position 0 needs the key of position 0", "same slot",
           "writing the chunk before returning the cached keys destroyed it"]),
    ("rolling_cache", """
        def kv_cache_update(cache, layer, k, v, positions):        # returns every cached key twice
            valid = cache.slot_pos[layer] >= 0
            out = (np.concatenate([cache.k[layer][valid], k, cache.k[layer][valid]]),
                   np.concatenate([cache.v[layer][valid], v, cache.v[layer][valid]]),
                   np.concatenate([cache.slot_pos[layer][valid], positions, cache.slot_pos[layer][valid]]))
            keep = slice(max(0, len(positions) - cache.slots), len(positions))
            s = positions[keep] % cache.slots
            cache.k[layer, s], cache.v[layer, s], cache.slot_pos[layer, s] = k[keep], v[keep], positions[keep]
            cache.seen[layer] = positions[-1] + 1
            return out
     """, ["comes back 2 times", "counted twice in the softmax"]),
    ("rolling_cache", """
        def kv_cache_update(cache, layer, k, v, positions):        # forgets cache.seen
            valid = cache.slot_pos[layer] >= 0
            out = (np.concatenate([cache.k[layer][valid], k]), np.concatenate([cache.v[layer][valid], v]),
                   np.concatenate([cache.slot_pos[layer][valid], positions]))
            keep = slice(max(0, len(positions) - cache.slots), len(positions))
            s = positions[keep] % cache.slots
            cache.k[layer, s], cache.v[layer, s], cache.slot_pos[layer, s] = k[keep], v[keep], positions[keep]
            return out
     """, ["cache.seen[0] is 0 afterwards, expected 3"]),
]


@pytest.mark.parametrize("name, code, phrases", PLANTED, ids=[f"{p[0]}-{i}" for i, p in enumerate(PLANTED)])
def test_planted_mistakes_are_rejected_and_named(name, code, phrases, tmp_path):
    result = check_file(name, write(tmp_path, code))
    assert not result.passed
    text = " ".join(result.format().split())           # unwrapped
    for phrase in phrases:
        assert phrase in text, f"{phrase!r} not in:\n{result.format()}"
    assert f"docs/exercises.md#{name}" in text


def test_a_function_that_raises_is_reported_with_its_line(tmp_path):
    path = write(tmp_path, """
        def sliding_window_causal_mask(q_pos, k_pos, window):
            d = q_pos[:, None] - k_pos[None, :]
            return (d >= 0) & (d < window)          # fails for window None
    """)
    result = check_file("window_mask", path)
    text = " ".join(result.format().split())
    assert "your function raised TypeError" in text and "(mine.py, line 6)" in text
    failed = [o for o in result.outcomes if not o.ok]
    assert "no window" in failed[0].title and "TypeError" in failed[0].message
    assert "empty slot" in failed[1].title and "let empty cache slots through" in " ".join(failed[1].message.split())


def test_cli_check_template_and_list(tmp_path, capsys):
    assert main(["exercise", "list"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in NAMES) and "mistral_np/model/rope.py:apply_rope" in out
    assert main(["exercise", "template", "rope"]) == 0
    template = capsys.readouterr().out
    path = tmp_path / "my_rope.py"
    path.write_text(template)
    assert "def apply_rope(x, cos, sin):" in template
    assert main(["exercise", "check", "rope", str(path)]) == 1
    out = capsys.readouterr().out
    assert "not written yet" in out and "6 of 6 checks failed" in out
    assert main(["exercise", "check", "rope", write(tmp_path, ALTERNATIVES["rope"])]) == 0
    out = capsys.readouterr().out
    assert "all 6 checks passed" in out and all(len(line) <= 80 for line in out.splitlines()[1:])
    assert main(["exercise", "check", "rope", write(tmp_path, PLANTED[0][1])]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_bad_input_is_a_one_line_error(tmp_path, capsys):
    cases = [(["exercise", "check", "softmax", "x.py"], "no exercise 'softmax'"),
             (["exercise", "template", "nope"], "choose one of rmsnorm, rope"),
             (["exercise", "check", "rope", str(tmp_path / "missing.py")], "no such file"),
             (["exercise", "check", "rope", write(tmp_path, "def apply_rope(x, cos, sin)\n", "syntax.py")],
              "line 3: syntax error"),
             (["exercise", "check", "rope", write(tmp_path, "def rotate(x):\n    return x\n", "other.py")],
              "defines no function apply_rope: the exercise asks for def apply_rope(x, cos, sin) (found: rotate)"),
             (["exercise", "check", "rope", write(tmp_path, "raise RuntimeError('boom')\n", "boom.py")],
              "importing it raised RuntimeError: boom")]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("mistral-np: error: ") and message in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(PathNotFoundError):
        check_file("rope", tmp_path / "missing.py")
    with pytest.raises(InvalidArgumentError):
        exercise("nope")
