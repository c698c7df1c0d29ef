"""ByteTokenizer against transformers.PerceiverTokenizer (defaults included) on random Unicode text and random ids."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import torch

from perceiver_io.tokenizer import ByteTokenizer

SPECIAL_STRINGS = ["[PAD]", "[BOS]", "[EOS]", "[MASK]", "[CLS]", "[SEP]"]
# Literal special tokens plus near misses that must stay plain bytes.
FRAGMENTS = SPECIAL_STRINGS + ["[UNK]", "[mask]", "[", "]", "[[", "]]", "[MAS", "ASK]", "MASK", "[ MASK]", " ", "\x00"]


@pytest.fixture(scope="module")
def hf():
    transformers = pytest.importorskip("transformers")  # only the parity tests need it
    return transformers.PerceiverTokenizer()


@pytest.fixture(scope="module")
def tok():
    return ByteTokenizer()


def _chars(code_points: np.ndarray) -> str:
    return np.asarray(code_points, dtype="<u4").tobytes().decode("utf-32-le")


def _random_code_points(rs: np.random.RandomState, n: int) -> np.ndarray:
    """n code points from one randomly chosen pool; never a surrogate."""
    pool = rs.randint(7)
    if pool == 0:  # printable ASCII
        return rs.randint(0x20, 0x7F, n)
    if pool == 1:  # C0/C1 control characters, NUL and DEL
        return rs.choice(np.r_[0:0x20, 0x7F:0xA0], n)
    if pool == 2:  # two- and three-byte BMP characters
        return rs.choice(np.r_[0xA0:0x800, 0x800:0xD800, 0xE000:0x10000], n)
    if pool == 3:  # combining marks after a base letter
        return np.stack([rs.randint(0x61, 0x7B, n), rs.randint(0x300, 0x370, n)], axis=1).ravel()[:n]
    if pool == 4:  # emoji (four bytes), with zero-width joiners and variation selectors
        return rs.choice(np.r_[0x1F300:0x1FB00, 0x200D, 0xFE0F], n)
    # whole code-point range without the 2048 surrogates
    cps = rs.randint(0, 0x110000 - 0x800, n)
    return cps + 0x800 * (cps >= 0xD800)


def random_texts(n: int, seed: int) -> list[str]:
    """n strings mixing every pool above with literal special-token strings and near misses."""
    rs = np.random.RandomState(seed)
    texts = ["", "[MASK]", "a[CLS]b[SEP]", "[[MASK]]", "[MAS[MASK]K]", "\x00\x01\x7f", "é"]
    while len(texts) < n:
        parts = []
        for _ in range(rs.randint(1, 6)):
            if rs.rand() < 0.3:
                parts.append(FRAGMENTS[rs.randint(len(FRAGMENTS))])
            else:
                parts.append(_chars(_random_code_points(rs, rs.randint(0, 9))))
        texts.append("".join(parts))
    return texts


TEXTS = random_texts(300, seed=1234)


def random_id_sequences(n: int, seed: int) -> list[np.ndarray]:
    """Id sequences in [0, 262): uniform ids, ids biased to UTF-8 lead/continuation bytes (mostly
    invalid UTF-8), and valid encodings with special ids spliced in (cutting characters apart)."""
    rs = np.random.RandomState(seed)
    out = [np.zeros(0, dtype=np.int64), np.array([3]), np.array([0xC3 + 6, 4, 0xA9 + 6])]
    while len(out) < n:
        kind = rs.randint(3)
        length = rs.randint(0, 40)
        if kind == 0:
            seq = rs.randint(0, 262, length)
        elif kind == 1:
            seq = rs.choice(np.r_[0:6, 0x80 + 6 : 262], length)
        else:
            text = random_texts(2, seed=int(rs.randint(1 << 30)))[1]
            seq = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64) + 6
            where = rs.randint(0, seq.size + 1, rs.randint(0, 4))
            seq = np.insert(seq, where, rs.randint(0, 6, where.size))
        out.append(seq.astype(np.int64))
    return out


ID_SEQUENCES = random_id_sequences(300, seed=99)


def test_constants(tok):
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert (tok.mask_token_id, tok.cls_token_id, tok.sep_token_id) == (3, 4, 5)
    assert tok.vocab_size == len(tok) == ByteTokenizer.vocab_size == 262
    assert tok.model_max_length == 2048 and ByteTokenizer(model_max_length=16).model_max_length == 16


def test_constants_match_hf(tok, hf):
    assert len(hf) == tok.vocab_size == len(tok)
    assert hf.model_max_length == tok.model_max_length
    assert sorted(hf.all_special_ids) == list(range(6))
    for name in ("pad", "bos", "eos", "mask", "cls", "sep"):
        assert getattr(hf, f"{name}_token_id") == getattr(tok, f"{name}_token_id")
        assert tok.decode([getattr(tok, f"{name}_token_id")]) == getattr(hf, f"{name}_token") == f"[{name.upper()}]"


@pytest.mark.parametrize("method", ["__call__", "encode", "decode", "batch_decode"])
def test_defaults_match_hf(tok, hf, method):
    """Every parameter we share with transformers has transformers' default."""
    ours = inspect.signature(getattr(tok, method)).parameters
    ref = inspect.signature(getattr(hf, method)).parameters
    shared = [name for name in ours if name in ref and ours[name].default is not inspect.Parameter.empty]
    assert shared, method
    for name in shared:
        assert ours[name].default == ref[name].default, (method, name)
    first = next(iter(ours))
    assert first == next(iter(ref)), (method, first)  # `text` / `token_ids` / `sequences`, usable by keyword


def test_known_values(tok):
    assert tok.encode("Hi") == [4, 72 + 6, 105 + 6, 5]
    assert tok.encode("Hi", add_special_tokens=False) == [78, 111]
    assert tok.encode("é", add_special_tokens=False) == [0xC3 + 6, 0xA9 + 6]
    assert tok.encode("a[MASK]b", add_special_tokens=False) == [103, 3, 104]
    assert tok.encode("[UNK][mask]", add_special_tokens=False) == [b + 6 for b in b"[UNK][mask]"]
    assert tok.encode("") == [4, 5]
    ids = [4, 78, 111, 3, 0, 1, 2, 5]
    assert tok.decode(ids) == "[CLS]Hi[MASK][PAD][BOS][EOS][SEP]"  # special tokens kept by default
    assert tok.decode(ids, skip_special_tokens=True) == "Hi"
    assert tok.batch_decode([ids, [4, 5, 0]]) == ["[CLS]Hi[MASK][PAD][BOS][EOS][SEP]", "[CLS][SEP][PAD]"]
    assert tok.batch_decode([ids, [4, 5, 0]], skip_special_tokens=True) == ["Hi", ""]
    # a special id cutting a two-byte character apart
    assert tok.decode([0xC3 + 6, 3, 0xA9 + 6]) == "\ufffd[MASK]\ufffd"
    assert tok.decode([0xC3 + 6, 3, 0xA9 + 6], skip_special_tokens=True) == "é"
    assert tok.decode([ord(".") + 6, 32 + 6, ord(".") + 6]) == ". ."  # no tokenization-space clean-up


def test_call_defaults(tok):
    # no padding, no truncation, Python lists; flat lists for a single str
    assert tok(["Hi", "abc"]) == {
        "input_ids": [[4, 78, 111, 5], [4, 103, 104, 105, 5]],
        "attention_mask": [[1, 1, 1, 1], [1, 1, 1, 1, 1]],
    }
    assert tok("Hi") == {"input_ids": [4, 78, 111, 5], "attention_mask": [1, 1, 1, 1]}
    # max_length alone truncates (truncation=None and padding=False)
    assert tok(["Hello world", "ab"], max_length=5)["input_ids"] == [[4, 78, 107, 114, 5], [4, 103, 104, 5]]
    assert tok("x" * 3000, truncation=True)["input_ids"] == [4] + [ord("x") + 6] * 2046 + [5]
    assert len(tok("x", padding="max_length")["input_ids"]) == 2048
    assert tok("x" * 30, truncation=True, add_special_tokens=False)["input_ids"] == [ord("x") + 6] * 30
    assert ByteTokenizer(model_max_length=8)("x" * 30, truncation=True)["input_ids"] == [4] + [ord("x") + 6] * 6 + [5]


@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_encode_matches_hf(tok, hf, add_special_tokens):
    for text in TEXTS:
        assert tok.encode(text, add_special_tokens=add_special_tokens) == hf.encode(
            text, add_special_tokens=add_special_tokens
        ), repr(text)


def test_encode_default_matches_hf(tok, hf):
    for text in TEXTS:
        assert tok.encode(text) == hf.encode(text), repr(text)


def test_long_text_matches_hf(tok, hf):
    rs = np.random.RandomState(7)
    pieces = [_chars(_random_code_points(rs, 200)) + FRAGMENTS[rs.randint(len(FRAGMENTS))] for _ in range(100)]
    text = "".join(pieces)
    ids = tok.encode(text)
    assert ids == hf.encode(text)
    assert tok.decode(ids) == hf.decode(ids) == "[CLS]" + text + "[SEP]"


def test_round_trip_with_special_tokens_rendered(tok):
    for text in TEXTS:
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


CALL_CASES = [
    dict(),
    dict(add_special_tokens=False),
    dict(padding=True),
    dict(padding="longest", add_special_tokens=False),
    dict(max_length=2),  # truncation=None + max_length + no padding: truncates
    dict(max_length=7),
    dict(max_length=7, add_special_tokens=False),
    dict(max_length=1, add_special_tokens=False),
    dict(max_length=7, truncation=False),
    dict(truncation=True, max_length=3),
    dict(truncation=True, max_length=9, padding=True),
    dict(truncation=True),
    dict(padding="max_length", truncation=True, max_length=12),
    dict(padding="max_length", truncation=True, max_length=12, add_special_tokens=False),
    dict(padding="max_length", max_length=12),  # no truncation: longer rows left as they are
    dict(padding="max_length", max_length=170),  # longer than every text
    dict(padding=True, max_length=5),  # max_length without truncation does not cut
]


def _hf_call(hf, batch, **kwargs):
    """transformers' output as a plain dict, or the exception type it raised."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return dict(hf(batch, **kwargs))
    except ValueError:
        return ValueError


@pytest.mark.filterwarnings("ignore:max_length=.* is ignored:UserWarning")
@pytest.mark.parametrize("kwargs", CALL_CASES, ids=[str(k) for k in CALL_CASES])
def test_call_matches_hf(tok, hf, kwargs):
    stacked = 0
    for start in range(0, 96, 8):
        batch = TEXTS[start : start + 8]
        lists = tok(batch, **kwargs)
        assert lists == _hf_call(hf, batch, **kwargs), batch
        ref = _hf_call(hf, batch, return_tensors="pt", **kwargs)
        if len({len(row) for row in lists["input_ids"]}) > 1:  # rows of unequal length
            # transformers raises too, except when the first row is empty: then it silently
            # returns a [B, 0] tensor; we raise in every case
            assert ref is ValueError or (lists["input_ids"][0] == [] and ref["input_ids"].shape == (len(batch), 0))
            with pytest.raises(ValueError, match=r"text: cannot stack rows of lengths"):
                tok(batch, return_tensors="pt", **kwargs)
            continue
        stacked += 1
        ours = tok(batch, return_tensors="pt", **kwargs)
        assert ours.keys() == ref.keys() == {"input_ids", "attention_mask"}
        for key in ours:
            assert ours[key].dtype == torch.long
            assert torch.equal(ours[key], ref[key]), (key, batch)
    padding = kwargs.get("padding", False)
    if padding in (True, "longest") or (padding == "max_length" and (kwargs.get("truncation") or kwargs["max_length"] > 100)):
        assert stacked == 12  # every padded batch went through the tensor comparison


def test_call_single_text(tok, hf):
    for text in ("héllo [MASK]", "", "[CLS]"):
        for kwargs in (dict(), dict(return_tensors="pt"), dict(max_length=4), dict(padding="max_length", max_length=20)):
            ours, ref = tok(text, **kwargs), dict(hf(text, **kwargs))
            assert ours.keys() == ref.keys()
            for key in ours:
                if kwargs.get("return_tensors") == "pt":
                    assert ours[key].shape == (1, ref[key].shape[1])
                    assert torch.equal(ours[key], ref[key])
                else:
                    assert ours[key] == ref[key] and isinstance(ours[key][0], int)  # flat, as in transformers
    assert tok(text="ab") == dict(hf(text="ab"))
    assert tok(("ab", "c"), padding=True) == dict(hf(("ab", "c"), padding=True))


def test_call_default_model_max_length(tok, hf):
    text = "x" * 2100
    ours = tok([text, "y"], truncation=True, padding=True, return_tensors="pt")
    ref = hf([text, "y"], truncation=True, padding=True, return_tensors="pt")
    assert ours["input_ids"].shape == (2, 2048)
    assert torch.equal(ours["input_ids"], ref["input_ids"])
    assert torch.equal(ours["attention_mask"], ref["attention_mask"])


def test_ignored_max_length_warns(tok):
    with pytest.warns(UserWarning, match=r"max_length=5 is ignored"):
        out = tok(["Hello world", "ab"], padding=True, max_length=5)
    assert [len(r) for r in out["input_ids"]] == [13, 13]
    with pytest.warns(UserWarning, match=r"max_length=3 is ignored"):
        tok("Hello", truncation=False, max_length=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok("Hello", max_length=3)
        tok("Hello", padding="max_length", max_length=9)


def _as_kinds(seq: np.ndarray):
    return [seq.tolist(), seq, torch.from_numpy(seq)]


@pytest.mark.parametrize("skip_special_tokens", [None, True, False])
def test_decode_matches_hf(tok, hf, skip_special_tokens):
    kwargs = {} if skip_special_tokens is None else {"skip_special_tokens": skip_special_tokens}
    for seq in ID_SEQUENCES:
        ref = hf.decode(seq.tolist(), **kwargs)
        for ids in _as_kinds(seq):
            assert tok.decode(ids, **kwargs) == ref, seq.tolist()


def test_decode_dtypes(tok):
    seq = np.array([4, 78, 111, 5])
    for dtype in (np.int32, np.uint8, np.uint64):
        assert tok.decode(seq.astype(dtype)) == "[CLS]Hi[SEP]"
    assert tok.decode(torch.tensor([78, 111], dtype=torch.int32)) == "Hi"
    assert tok.decode([]) == "" and tok.decode(np.zeros(0, dtype=np.int64)) == ""
    assert tok.batch_decode([]) == [] and tok.batch_decode(torch.zeros(0, 3, dtype=torch.long)) == []


@pytest.mark.parametrize("skip_special_tokens", [None, True, False])
def test_batch_decode_matches_hf(tok, hf, skip_special_tokens):
    kwargs = {} if skip_special_tokens is None else {"skip_special_tokens": skip_special_tokens}
    batch = tok(TEXTS[:40], padding=True, return_tensors="pt")["input_ids"]
    ref = hf.batch_decode(batch.tolist(), **kwargs)
    assert tok.batch_decode(batch, **kwargs) == ref
    assert tok.batch_decode(batch.numpy(), **kwargs) == ref
    ragged = [seq.tolist() for seq in ID_SEQUENCES[:40]]
    ref = hf.batch_decode(ragged, **kwargs)
    assert tok.batch_decode(ragged, **kwargs) == ref
    assert tok.batch_decode(ID_SEQUENCES[:40], **kwargs) == ref


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("text", "got"),
    [(b"bytes", "bytes"), (3, "int"), (None, "NoneType"), ({"a": 1}, "dict"), (["ok", b"x"], "bytes"), (("ok", 7), "int")],
)
def test_call_rejects_non_str(tok, text, got):
    where = r"text\[1\]" if isinstance(text, (list, tuple)) else "text"
    with pytest.raises(TypeError, match=rf"{where}: expected a str.*got {got}"):
        tok(text)


def test_encode_rejects_bad_input(tok):
    with pytest.raises(TypeError, match=r"text: expected a str, got bytes"):
        tok.encode(b"abc")
    with pytest.raises(TypeError, match=r"add_special_tokens: expected a bool, got int"):
        tok.encode("abc", add_special_tokens=1)
    with pytest.raises(TypeError, match=r"positional"):
        tok.encode("abc", False)  # transformers' second positional is text_pair


def test_call_rejects_empty_batch(tok):
    with pytest.raises(ValueError, match=r"text: expected a str or a non-empty list/tuple of str, got an empty list"):
        tok([])


@pytest.mark.parametrize(
    ("kwargs", "floor"),
    [
        (dict(max_length=1, truncation=True), 2),
        (dict(max_length=0), 2),
        (dict(max_length=-3, padding="max_length"), 2),
        (dict(max_length=0, add_special_tokens=False, truncation=True), 1),
    ],
)
def test_call_rejects_small_max_length(tok, kwargs, floor):
    with pytest.raises(ValueError, match=rf"max_length: expected an int >= {floor}.*got {kwargs['max_length']}"):
        tok(["abc"], **kwargs)


def test_call_rejects_bad_options(tok):
    with pytest.raises(TypeError, match=r"max_length: expected an int or None, got float"):
        tok("abc", max_length=4.0)
    with pytest.raises(TypeError, match=r"add_special_tokens: expected a bool, got str"):
        tok("abc", add_special_tokens="yes")
    with pytest.raises(ValueError, match=r"padding: expected True, False, 'longest' or 'max_length', got 'left'"):
        tok("abc", padding="left")
    with pytest.raises(ValueError, match=r"padding: expected .*got 1"):
        tok("abc", padding=1)
    with pytest.raises(ValueError, match=r"truncation: expected True, False or None, got 'longest_first'"):
        tok("abc", truncation="longest_first")
    with pytest.raises(ValueError, match=r"return_tensors: expected 'pt' or None, got 'np'"):
        tok("abc", return_tensors="np")
    with pytest.raises(ValueError, match=r"text: cannot stack rows of lengths \[5, 3\]"):
        tok(["abc", "a"], return_tensors="pt")
    with pytest.raises(ValueError, match=r"text: cannot stack rows of lengths \[7, 4\]"):
        tok(["abcde", "a"], padding="max_length", max_length=4, return_tensors="pt")
    with pytest.raises(TypeError, match=r"model_max_length: expected an int, got float"):
        ByteTokenizer(model_max_length=2048.0)
    with pytest.raises(ValueError, match=r"model_max_length: expected an int >= 2, got 1"):
        ByteTokenizer(model_max_length=1)


@pytest.mark.parametrize("bad", [262, 300, -1, 2**40, 2**64, 10**30])
def test_decode_rejects_out_of_range(tok, bad):
    with pytest.raises(ValueError, match=rf"token_ids: every id must be in \[0, 262\), got {bad} at index 1"):
        tok.decode([78, bad])
    with pytest.raises(ValueError, match=rf"sequences\[1\]: every id must be in \[0, 262\), got {bad} at index 0"):
        tok.batch_decode([[78], [bad]])
    if -(2**63) <= bad < 2**63:
        with pytest.raises(ValueError, match=rf"token_ids: every id must be in \[0, 262\), got {bad} at index 1"):
            tok.decode(torch.tensor([78, bad]))
        with pytest.raises(ValueError, match=rf"sequences: every id must be in \[0, 262\), got {bad} at index \[1, 0\]"):
            tok.batch_decode(np.array([[78], [bad]]))


def test_decode_rejects_bad_types_and_shapes(tok):
    with pytest.raises(TypeError, match=r"token_ids: expected integer ids, got elements of dtype float64"):
        tok.decode([1.0, 2.0])
    with pytest.raises(TypeError, match=r"token_ids: expected integer ids, got elements of dtype bool"):
        tok.decode([True, False])
    with pytest.raises(TypeError, match=r"token_ids: expected integer ids, got elements of dtype object"):
        tok.decode([1, None])
    with pytest.raises(TypeError, match=r"token_ids: expected integer ids, got a tensor of dtype torch.float32"):
        tok.decode(torch.ones(3))
    with pytest.raises(TypeError, match=r"token_ids: expected integer ids, got str"):
        tok.decode("abc")
    with pytest.raises(TypeError, match=r"skip_special_tokens: expected a bool, got str"):
        tok.decode([78], skip_special_tokens="no")
    with pytest.raises(ValueError, match=r"token_ids: expected a 1-D sequence of ids, got shape \[1, 2\] \(use batch_decode"):
        tok.decode(torch.tensor([[78, 79]]))
    with pytest.raises(ValueError, match=r"token_ids: expected a 1-D sequence of integer ids, got a ragged sequence"):
        tok.decode([[78], [79, 80]])
    with pytest.raises(ValueError, match=r"sequences: expected a list of id sequences, got a flat list of ids"):
        tok.batch_decode([78, 79])
    with pytest.raises(ValueError, match=r"sequences: expected a 2-D sequence of ids, got shape \[2\]"):
        tok.batch_decode(torch.tensor([78, 79]))
    with pytest.raises(TypeError, match=r"sequences: expected a 2-D tensor/array or a list of id sequences, got str"):
        tok.batch_decode("abc")
    with pytest.raises(TypeError, match=r"skip_special_tokens: expected a bool, got int"):
        tok.batch_decode([[78]], skip_special_tokens=1)
