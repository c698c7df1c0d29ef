"""ByteTokenizer against transformers.PerceiverTokenizer on random Unicode text and random ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from perceiver_io.tokenizer import ByteTokenizer

transformers = pytest.importorskip("transformers")

SPECIAL_STRINGS = ["[PAD]", "[BOS]", "[EOS]", "[MASK]", "[CLS]", "[SEP]"]
# Literal special tokens plus near misses that must stay plain bytes.
FRAGMENTS = SPECIAL_STRINGS + ["[UNK]", "[mask]", "[", "]", "[[", "]]", "[MAS", "ASK]", "MASK", "[ MASK]", " ", "\x00"]


@pytest.fixture(scope="module")
def hf():
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
    assert tok.vocab_size == len(tok) == 262
    assert tok.num_special_tokens == 6
    assert ByteTokenizer.vocab_size == 262 and ByteTokenizer.mask_token_id == 3


def test_constants_match_hf(tok, hf):
    assert len(hf) == tok.vocab_size
    for name in ("pad", "bos", "eos", "mask", "cls", "sep"):
        assert getattr(hf, f"{name}_token_id") == getattr(tok, f"{name}_token_id")
        assert getattr(hf, f"{name}_token") == tok.special_tokens[getattr(tok, f"{name}_token_id")]


def test_known_values(tok):
    assert tok.encode("Hi") == [4, 72 + 6, 105 + 6, 5]
    assert tok.encode("Hi", add_special_tokens=False) == [78, 111]
    assert tok.encode("é", add_special_tokens=False) == [0xC3 + 6, 0xA9 + 6]
    assert tok.encode("a[MASK]b", add_special_tokens=False) == [103, 3, 104]
    assert tok.encode("", add_special_tokens=True) == [4, 5]
    assert tok.decode([4, 78, 111, 3, 0, 5], skip_special_tokens=False) == "[CLS]Hi[MASK][PAD][SEP]"
    assert tok.decode([4, 78, 111, 3, 0, 5]) == "Hi"
    # a special id cutting a two-byte character apart
    assert tok.decode([0xC3 + 6, 3, 0xA9 + 6], skip_special_tokens=False) == "\ufffd[MASK]\ufffd"
    assert tok.decode([0xC3 + 6, 3, 0xA9 + 6], skip_special_tokens=True) == "é"


@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_encode_matches_hf(tok, hf, add_special_tokens):
    for text in TEXTS:
        assert tok.encode(text, add_special_tokens) == hf.encode(text, add_special_tokens=add_special_tokens), repr(text)


def test_round_trip_with_special_tokens_rendered(tok):
    for text in TEXTS:
        assert tok.decode(tok.encode(text, add_special_tokens=False), skip_special_tokens=False) == text


CALL_CASES = [
    dict(),
    dict(add_special_tokens=False),
    dict(truncation=True, max_length=2),
    dict(truncation=True, max_length=3),
    dict(truncation=True, max_length=9),
    dict(truncation=True, max_length=9, add_special_tokens=False),
    dict(truncation=True, max_length=1, add_special_tokens=False),
    dict(padding="max_length", truncation=True, max_length=12),
    dict(padding="max_length", truncation=True, max_length=12, add_special_tokens=False),
    dict(padding="max_length", max_length=170),  # longer than every text
    dict(padding=True, max_length=5),  # max_length without truncation does not cut
]


@pytest.mark.filterwarnings("ignore:`max_length` is ignored:UserWarning")
@pytest.mark.parametrize("kwargs", CALL_CASES, ids=[str(k) for k in CALL_CASES])
def test_call_matches_hf(tok, hf, kwargs):
    hf_kwargs = {"padding": "longest", **kwargs}
    for start in range(0, 96, 8):
        batch = TEXTS[start : start + 8]
        ours = tok(batch, **kwargs)
        ref = hf(batch, return_tensors="pt", **hf_kwargs)
        for key in ("input_ids", "attention_mask"):
            assert ours[key].dtype == torch.long
            assert ours[key].shape == ref[key].shape
            assert torch.equal(ours[key], ref[key]), (key, batch)
        lists = tok(batch, return_tensors=None, **kwargs)
        ref_lists = hf(batch, **hf_kwargs)
        assert lists == {"input_ids": ref_lists["input_ids"], "attention_mask": ref_lists["attention_mask"]}


def test_call_unpadded_lists_match_hf(tok, hf):
    batch = TEXTS[:20]
    for kwargs in (dict(), dict(truncation=True, max_length=6)):
        ours = tok(batch, padding=False, return_tensors=None, **kwargs)
        ref = hf(batch, padding=False, **kwargs)
        assert ours["input_ids"] == ref["input_ids"]
        assert ours["attention_mask"] == ref["attention_mask"]


def test_call_single_text(tok, hf):
    out = tok("héllo [MASK]")
    assert out["input_ids"].shape == out["attention_mask"].shape == (1, 10)
    assert out["input_ids"].dtype == out["attention_mask"].dtype == torch.long
    ref = hf("héllo [MASK]", return_tensors="pt")
    assert torch.equal(out["input_ids"], ref["input_ids"])
    lists = tok("héllo [MASK]", return_tensors=None)
    assert lists["input_ids"] == hf("héllo [MASK]")["input_ids"]  # flat, as in transformers
    assert tok(("ab", "c"), return_tensors="np")["input_ids"].tolist() == [[4, 103, 104, 5], [4, 105, 5, 0]]


def test_call_default_model_max_length(tok, hf):
    text = "x" * 2100
    ours = tok([text, "y"], truncation=True)
    ref = hf([text, "y"], truncation=True, padding=True, return_tensors="pt")
    assert ours["input_ids"].shape == (2, 2048)
    assert torch.equal(ours["input_ids"], ref["input_ids"])
    assert torch.equal(ours["attention_mask"], ref["attention_mask"])


def _as_kinds(seq: np.ndarray):
    return [seq.tolist(), seq, torch.from_numpy(seq)]


@pytest.mark.parametrize("skip_special_tokens", [True, False])
def test_decode_matches_hf(tok, hf, skip_special_tokens):
    for seq in ID_SEQUENCES:
        ref = hf.decode(seq.tolist(), skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False)
        for ids in _as_kinds(seq):
            assert tok.decode(ids, skip_special_tokens=skip_special_tokens) == ref, seq.tolist()


def test_decode_dtypes(tok):
    seq = np.array([4, 78, 111, 5])
    for dtype in (np.int32, np.uint8, np.uint64):
        assert tok.decode(seq.astype(dtype), skip_special_tokens=False) == "[CLS]Hi[SEP]"
    assert tok.decode(torch.tensor([78, 111], dtype=torch.int32)) == "Hi"
    assert tok.decode([]) == "" and tok.decode(np.zeros(0, dtype=np.int64), skip_special_tokens=False) == ""


@pytest.mark.parametrize("skip_special_tokens", [True, False])
def test_batch_decode_matches_hf(tok, hf, skip_special_tokens):
    batch = tok(TEXTS[:40])["input_ids"]
    ref = hf.batch_decode(batch.tolist(), skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False)
    assert tok.batch_decode(batch, skip_special_tokens=skip_special_tokens) == ref
    assert tok.batch_decode(batch.numpy(), skip_special_tokens=skip_special_tokens) == ref
    ragged = [seq.tolist() for seq in ID_SEQUENCES[:40]]
    ref = hf.batch_decode(ragged, skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False)
    assert tok.batch_decode(ragged, skip_special_tokens=skip_special_tokens) == ref


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("texts", [b"bytes", 3, None, {"a": 1}, ["ok", b"bytes"], ("ok", 7)])
def test_call_rejects_non_str(tok, texts):
    with pytest.raises(TypeError, match=r"texts.*expected a str.*got (bytes|int|NoneType|dict)"):
        tok(texts)


def test_encode_rejects_non_str(tok):
    with pytest.raises(TypeError, match=r"text: expected a str, got bytes"):
        tok.encode(b"abc")


def test_call_rejects_empty_batch(tok):
    with pytest.raises(ValueError, match=r"texts.*empty"):
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
    with pytest.raises(ValueError, match=r"padding: expected .*got 'left'"):
        tok("abc", padding="left")
    with pytest.raises(ValueError, match=r"truncation: expected .*got 'yes'"):
        tok("abc", truncation="yes")
    with pytest.raises(ValueError, match=r"return_tensors: expected 'pt', 'np' or None, got 'tf'"):
        tok("abc", return_tensors="tf")
    with pytest.raises(ValueError, match=r"cannot stack rows of lengths \[5, 3\]"):
        tok(["abc", "a"], padding=False)
    with pytest.raises(ValueError, match=r"cannot stack rows of lengths \[7, 4\]"):
        tok(["abcde", "a"], padding="max_length", max_length=4)


@pytest.mark.parametrize("bad", [262, 300, -1, 2**40, 10**30])
def test_decode_rejects_out_of_range(tok, bad):
    pattern = rf"ids: every id must be in \[0, 262\), got {bad}" if bad < 2**63 else r"ids: every id must be in \[0, 262\)"
    with pytest.raises(ValueError, match=pattern):
        tok.decode([78, bad])
    if bad < 2**63:
        with pytest.raises(ValueError, match=rf"{pattern} at index 1"):
            tok.decode(torch.tensor([78, bad]))
        with pytest.raises(ValueError, match=r"sequences\[1\]: every id must be in \[0, 262\)"):
            tok.batch_decode([[78], [bad]])
        with pytest.raises(ValueError, match=rf"sequences: every id must be in \[0, 262\), got {bad} at index \[1, 0\]"):
            tok.batch_decode(np.array([[78], [bad]]))


def test_decode_rejects_bad_types_and_shapes(tok):
    with pytest.raises(TypeError, match=r"ids: expected integer ids, got dtype float64"):
        tok.decode([1.0, 2.0])
    with pytest.raises(TypeError, match=r"ids: expected integer ids, got a tensor of dtype torch.float32"):
        tok.decode(torch.ones(3))
    with pytest.raises(TypeError, match=r"ids: expected integer ids, got str"):
        tok.decode("abc")
    with pytest.raises(ValueError, match=r"ids: expected a 1-D sequence of ids, got shape \[1, 2\]"):
        tok.decode(torch.tensor([[78, 79]]))
    with pytest.raises(ValueError, match=r"sequences: expected a 2-D .*flat list"):
        tok.batch_decode([78, 79])
    with pytest.raises(ValueError, match=r"sequences: expected a 2-D sequence of ids, got shape \[2\]"):
        tok.batch_decode(torch.tensor([78, 79]))
