"""Task pipelines (``perceiver_io.pipeline``), the ``perceiver-io predict`` command and the ``pipeline`` demo section,
on small randomly initialised models saved with ``save_pretrained`` and loaded back by path: each pipeline's results
equal the library functions it builds on, a list gives the results of its items one by one, and every bad input is
a one-line error naming the argument."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

import perceiver_io
from perceiver_io import create_model, pipeline
from perceiver_io.cli import main
from perceiver_io.data.augment import eval_transform
from perceiver_io.data.kinetics import read_clip
from perceiver_io.fill_mask import fill_mask
from perceiver_io.flow_tool import estimate_flow, flow_image, read_frame
from perceiver_io.pipelines import PIPELINES, tasks_for
from perceiver_io.pipelines.fill_mask import result_dict
from perceiver_io.pipelines.multimodal import write_video

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IMAGE_ENCODER = {"num_latents": 8, "num_latent_channels": 32, "num_blocks": 1, "num_self_attends_per_block": 1}
FLOW_SIZES = {"train_size": (32, 48), "num_latents": 8, "num_latent_channels": 16, "num_self_attends": 1,
              "num_bands": 4}
TEXTS = ["Hello [MASK*3]!", "The [MASK] sat on the [MASK*2].", "[MASK]x"]


def _imagenet_names() -> list[str]:
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(model: torch.nn.Module, directory: Path) -> str:
    model.save_pretrained(directory)
    return str(directory)


def write_clip(path: Path, frames: int = 12, size: tuple[int, int] = (40, 48), fps: int = 25,
               audio_rate: int = 16000) -> Path:
    """A small video (a moving bright block on a red ramp) with a 440 Hz tone, written with PyAV."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.height, video.width = size
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=audio_rate)
        audio.layout = "mono"
        for i in range(frames):
            image = np.zeros((*size, 3), np.uint8)
            image[:, :, 0] = 10 * i
            image[5:15, 4 * i % 40:4 * i % 40 + 8] = 255
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        n = audio_rate * frames // fps
        tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / audio_rate)).astype(np.float32)[None]
        for start in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(tone[:, start:start + 1024], format="fltp", layout="mono")
            frame.sample_rate = audio_rate
            container.mux(audio.encode(frame))
        for stream in (video, audio):
            container.mux(stream.encode(None))
    return path


# ------------------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    """Every test model's save_pretrained directory, by name."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    dirs = {
        "mlm": _save(create_model("language_bytes_small", max_seq_len=64, num_latents=8, num_latent_channels=32,
                                  num_self_attends=1, num_channels=32), root / "mlm"),
        "imagenet": _save(create_model("imagenet_conv", image_size=64, encoder=IMAGE_ENCODER), root / "imagenet"),
        "five": _save(create_model("imagenet_conv", num_classes=5, image_size=64, encoder=IMAGE_ENCODER),
                      root / "five"),
        "multimodal": _save(create_model("multimodal_autoencoding_small", num_latents=8, num_latent_channels=32,
                                         num_self_attends=1, num_bands=4), root / "multimodal"),
    }
    for name in ("optical_flow_small", "optical_flow_conv_small"):
        model = create_model(name, **FLOW_SIZES)
        with torch.no_grad():  # the official flow head starts at zero: give it a flow to compare
            model.decoder.output.weight.normal_(0.0, 0.5)
            model.decoder.output.bias.normal_()
        dirs[name] = _save(model, root / name)
    return dirs


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Image, frame, video and not-an-image files."""
    root = tmp_path_factory.mktemp("files")
    out = {}
    for i, (h, w) in enumerate([(50, 70), (90, 60), (40, 56), (40, 56)]):
        out[f"image{i}"] = root / f"image{i}.png"
        Image.fromarray(_rgb(h, w, i)).save(out[f"image{i}"])
    out["jpeg"] = root / "photo.jpg"
    Image.fromarray(_rgb(80, 100, 7)).save(out["jpeg"], quality=90)
    out["text"] = root / "notes.txt"
    out["text"].write_text("not an image\n")
    out["fake_video"] = root / "fake.mp4"
    out["fake_video"].write_text("not a video\n")
    out["clip"] = write_clip(root / "clip.mp4")
    return out


@pytest.fixture(scope="module")
def classifier(models) -> perceiver_io.pipelines.ImageClassificationPipeline:
    return pipeline("image-classification", model=models["imagenet"])


# ----------------------------------------------------------------------------------------------------------- fill-mask


def test_fill_mask_is_fill_mask_as_plain_dicts(models):
    pipe = pipeline("fill-mask", model=models["mlm"], top_k=3)
    reference = fill_mask(perceiver_io.from_pretrained(models["mlm"]), TEXTS[1], top_k=3)
    result = pipe(TEXTS[1])
    assert result == result_dict(reference)
    json.dumps(result)  # plain Python all the way down
    assert result["text"] == TEXTS[1] and result["truncated"] is False
    assert [(s["start"], s["end"]) for s in result["spans"]] == [(4, 10), (22, 30)]
    assert result["filled_text"] == f"The {result['spans'][0]['text']} sat on the {result['spans'][1]['text']}."
    for span, length in zip(result["spans"], (1, 2)):
        assert len(span["candidates"]) == len(span["token_ids"]) == length
        for position, best in zip(span["candidates"], span["token_ids"]):
            scores = [c["score"] for c in position]
            assert len(position) == 3 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1
            assert position[0]["token_id"] == best and all(c["token_id"] >= 6 for c in position)


def test_fill_mask_list_in_list_out(models):
    pipe = pipeline("fill-mask", model=models["mlm"])
    batched = pipe(TEXTS)
    assert isinstance(batched, list) and len(batched) == len(TEXTS)
    for text, result in zip(TEXTS, batched):
        single = pipe(text)
        assert result["filled_text"] == single["filled_text"]
        for a, b in zip(result["spans"], single["spans"]):
            assert a["token_ids"] == b["token_ids"]
            for pa, pb in zip(a["candidates"], b["candidates"]):
                assert [c["token_id"] for c in pa] == [c["token_id"] for c in pb]
                assert [c["score"] for c in pa] == pytest.approx([c["score"] for c in pb], abs=1e-5)
    assert pipe([]) == [] and pipe(tuple(TEXTS[:1]))[0] == pipe(TEXTS[0])


def test_fill_mask_bad_text_names_it(models):
    pipe = pipeline("fill-mask", model=models["mlm"])
    with pytest.raises(ValueError, match=r"^text\[1\]: no mask to fill"):
        pipe(["a [MASK]", "no mask here"])
    with pytest.raises(ValueError, match=r"^text: malformed mask at character 2"):
        pipe("a [MASK*0]")
    with pytest.raises(TypeError, match=r"^text: expected a str"):
        pipe(42)


# ------------------------------------------------------------------------------------------------ image classification


def test_image_preprocessing_is_the_official_eval_transform(classifier, files):
    assert classifier.image_size == 64
    photo = Image.open(files["jpeg"]).convert("RGB")
    expected = eval_transform(64)(photo)
    assert expected.shape == (3, 64, 64)
    assert torch.equal(classifier.preprocess(photo), expected)
    assert torch.equal(classifier.preprocess(files["jpeg"]), expected)  # a path reads the same image
    assert torch.equal(classifier.preprocess(str(files["jpeg"])), expected)
    tensor = torch.from_numpy(np.asarray(photo)).permute(2, 0, 1)
    assert torch.equal(classifier.preprocess(tensor), eval_transform(64)(tensor))


def test_image_classification_top_k_is_the_models_softmax(classifier, models, files):
    names = _imagenet_names()
    assert classifier.class_names == names  # a 1000-class model gets ImageNet's names, offline
    pixels = eval_transform(64)(Image.open(files["image1"]).convert("RGB"))
    with torch.no_grad():
        logits = perceiver_io.from_pretrained(models["imagenet"])(pixels[None])[0]
    top = classifier(files["image1"])
    assert len(top) == 5 and [set(c) for c in top] == [{"label", "score"}] * 5
    scores = [c["score"] for c in top]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1
    assert top[0]["label"] == names[int(logits.argmax())]
    probabilities = logits.softmax(-1)
    assert scores == pytest.approx(probabilities.topk(5).values.tolist(), abs=1e-6)
    assert [c["label"] for c in top] == [names[i] for i in probabilities.topk(5).indices.tolist()]


def test_image_classification_other_class_counts_and_names(models, files):
    pipe = pipeline("image-classification", model=models["five"], top_k=10)
    top = pipe(files["image0"])
    assert len(top) == 5  # capped at the number of classes: all of them, so the scores sum to 1
    assert sorted(c["label"] for c in top) == [f"class_{i}" for i in range(5)]
    assert sum(c["score"] for c in top) == pytest.approx(1.0, abs=1e-5)
    named = pipeline("image-classification", model=models["five"], class_names=list("abcde"))
    assert {c["label"] for c in named(files["image0"], top_k=2)} <= set("abcde")
    assert len(named(files["image0"], top_k=2)) == 2
    with pytest.raises(ValueError, match=r"^class_names: expected 5 names"):
        pipeline("image-classification", model=models["five"], class_names=["a", "b"])


def test_image_classification_list_in_list_out(classifier, files):
    photo = Image.open(files["image2"])
    uint8 = torch.from_numpy(_rgb(30, 40, 3)).permute(2, 0, 1)
    inputs = [photo, str(files["image0"]), files["jpeg"], uint8, uint8.float() / 255]
    batched = classifier(inputs)
    assert isinstance(batched, list) and len(batched) == len(inputs)
    for item, result in zip(inputs, batched):
        single = classifier(item)
        assert [c["label"] for c in result] == [c["label"] for c in single]
        assert [c["score"] for c in result] == pytest.approx([c["score"] for c in single], abs=1e-5)
    stacked = classifier(torch.stack([uint8, uint8]))  # a [B, C, H, W] tensor is a batch
    assert len(stacked) == 2 and [c["label"] for c in stacked[0]] == [c["label"] for c in stacked[1]]
    # rows of one batch may round differently (thread-dependent summation order): equal to float32 precision
    assert [c["score"] for c in stacked[0]] == pytest.approx([c["score"] for c in stacked[1]], rel=1e-5)
    assert classifier([]) == []


def test_image_classification_bad_inputs_name_the_argument(classifier, files, tmp_path):
    with pytest.raises(ValueError, match=rf"^images\[1\]: {files['text']} is not an image file"):
        classifier([files["image0"], files["text"]])
    with pytest.raises(FileNotFoundError, match=r"^images: no such image file: .*missing\.png"):
        classifier(tmp_path / "missing.png")
    with pytest.raises(ValueError, match=r"^images: .* is a directory, not an image file"):
        classifier(tmp_path)
    with pytest.raises(TypeError, match=r"^images: expected a PIL image, an image file path or a \[C, H, W\] tensor"):
        classifier(3)
    with pytest.raises(ValueError, match=r"^images\[0\]: expected float values in \[0, 1\]"):
        classifier([torch.rand(3, 20, 20) * 255])
    with pytest.raises(ValueError, match=r"^images: expected 1, 3 or 4 channels"):
        classifier(torch.rand(5, 20, 20))
    with pytest.raises(ValueError, match=r"^top_k: expected a positive int"):
        classifier(files["image0"], top_k=0)


# -------------------------------------------------------------------------------------------------------- optical flow


@pytest.mark.parametrize("preset", ["optical_flow_small", "optical_flow_conv_small"])
def test_optical_flow_is_estimate_flow(models, files, preset):
    pipe = pipeline("optical-flow", model=models[preset])
    model = perceiver_io.from_pretrained(models[preset])
    first, second = read_frame(files["image2"]), read_frame(files["image3"])
    expected = estimate_flow(model, first, second)  # 40 x 56 frames, larger than the 32 x 48 training size: tiled
    result = pipe((files["image2"], str(files["image3"])))
    assert set(result) == {"flow", "image"}
    flow = result["flow"]
    assert isinstance(flow, np.ndarray) and flow.dtype == np.float32 and flow.shape == (40, 56, 2)
    assert np.array_equal(flow, expected.permute(1, 2, 0).numpy()) and np.abs(flow).max() > 0
    assert isinstance(result["image"], Image.Image) and result["image"].size == (56, 40)
    assert np.array_equal(np.asarray(result["image"]), flow_image(expected).permute(1, 2, 0).numpy())
    # PIL images and tensors are the same frames
    as_pil = pipe([Image.open(files["image2"]), Image.open(files["image3"])])
    as_tensor = pipe((first, second.float() / 255))
    assert np.array_equal(as_pil["flow"], flow)
    np.testing.assert_allclose(as_tensor["flow"], flow, atol=1e-4)


def test_optical_flow_list_of_pairs(models, files):
    pipe = pipeline("optical-flow", model=models["optical_flow_small"], tiling="native")
    pairs = [(files["image2"], files["image3"]), (files["image3"], files["image2"])]
    batched = pipe(pairs)
    assert isinstance(batched, list) and len(batched) == 2
    for pair, result in zip(pairs, batched):
        assert np.array_equal(result["flow"], pipe(pair)["flow"])
    assert pipe([]) == []


def test_optical_flow_bad_inputs_name_the_argument(models, files):
    pipe = pipeline("optical-flow", model=models["optical_flow_small"])
    with pytest.raises(TypeError, match=r"^pairs\[1\]: expected a pair of frames .* got 3 items"):
        pipe([(files["image2"], files["image3"]), (files["image2"], files["image3"], files["image3"])])
    with pytest.raises(ValueError, match=r"^pairs: frame2: expected the size of frame1, 40x56"):
        pipe((files["image2"], files["image0"]))
    with pytest.raises(ValueError, match=rf"^pairs\[0\]\[1\]: {files['text']}"):
        pipe([(files["image2"], files["text"])])
    with pytest.raises(TypeError, match=r"^pairs: expected a pair of frames"):
        pipe(files["image2"])
    with pytest.raises(ValueError, match=r"^tiling: expected one of"):
        pipeline("optical-flow", model=models["optical_flow_small"], tiling="sideways")


# ---------------------------------------------------------------------------------------------------------- multimodal


def test_multimodal_reconstructs_a_video_file(models, files):
    pipe = pipeline("multimodal-autoencoding", model=models["multimodal"])
    assert (pipe.layout.num_frames, pipe.layout.image_size, pipe.layout.audio_samples) == (8, 32, 512)
    assert pipe.audio_rate == 1600 and pipe.fps == 25.0
    result = pipe(files["clip"])
    assert set(result) == {"video", "audio", "label", "fps", "audio_rate"}
    video, audio = result["video"], result["audio"]
    assert video.dtype == np.uint8 and video.shape == (8, 32, 32, 3)
    assert audio.dtype == np.float32 and audio.shape == (512,)
    scores = [c["score"] for c in result["label"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True) and sum(scores) <= 1 + 1e-6
    assert all(c["label"].startswith("class_") for c in result["label"])
    # the same as the model's own reconstruction of the clip as the Kinetics reader decodes it, the label hidden
    clip = read_clip(files["clip"], 8, 32, 25.0, 1600)
    model = perceiver_io.from_pretrained(models["multimodal"])
    inputs = {"image": clip["image"][None], "audio": clip["audio"][None], "label": torch.zeros(1, 8)}
    out = model.reconstruct(inputs, mask_probs={"label": 1.0})
    expected = (out["image"][0].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(video, expected)
    np.testing.assert_allclose(audio, out["audio"][0, :, 0].numpy(), atol=1e-6)
    assert result["label"][0]["label"] == f"class_{int(out['label'][0].argmax())}"


def test_multimodal_dicts_and_lists(models, files):
    pipe = pipeline("multimodal-autoencoding", model=models["multimodal"], class_names=list("abcdefgh"), top_k=3)
    clip = read_clip(files["clip"], 8, 32, 25.0, 1600)
    from_file = pipe(files["clip"])
    from_dict = pipe({"image": clip["image"], "audio": clip["audio"][:, 0]})
    assert np.array_equal(from_file["video"], from_dict["video"])
    assert from_file["label"] == from_dict["label"] and len(from_file["label"]) == 3
    assert {c["label"] for c in from_file["label"]} <= set("abcdefgh")
    smaller = {"image": (clip["image"][:4, :, :16, :16] * 255).round().to(torch.uint8), "audio": clip["audio"][:256]}
    batched = pipe([files["clip"], smaller, str(files["clip"])])  # two shapes: run as two groups
    assert [r["video"].shape for r in batched] == [(8, 32, 32, 3), (4, 16, 16, 3), (8, 32, 32, 3)]
    for item, result in zip([files["clip"], smaller], batched):
        single = pipe(item)
        assert np.abs(result["video"].astype(int) - single["video"].astype(int)).max() <= 1
        np.testing.assert_allclose(result["audio"], single["audio"], atol=1e-4)
    assert pipe([]) == []


def test_multimodal_bad_inputs_name_the_argument(models, files, tmp_path):
    pipe = pipeline("multimodal-autoencoding", model=models["multimodal"])
    with pytest.raises(ValueError, match=rf"^clips\[1\]: cannot read video file {files['fake_video']}"):
        pipe([files["clip"], files["fake_video"]])
    with pytest.raises(FileNotFoundError, match=r"^clips: no such video file: .*missing\.mp4"):
        pipe(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match=r"^clips: expected a dict with the keys \['image', 'audio'\]"):
        pipe({"image": torch.rand(8, 3, 32, 32)})
    with pytest.raises(ValueError, match=r"^clips\['image'\]: expected a video of shape \[T, 3, H, W\]"):
        pipe({"image": torch.rand(8, 32, 32, 3), "audio": torch.zeros(512)})
    with pytest.raises(ValueError, match=r"^clips: inputs\['image'\]: video: height and width must divide by"):
        pipe({"image": torch.rand(8, 3, 30, 30), "audio": torch.zeros(512)})
    with pytest.raises(TypeError, match=r"^clips: expected a video file path or a dict of tensors"):
        pipe(3.5)


def test_write_video_round_trip(tmp_path):
    frames = np.stack([np.full((32, 48, 3), 20 * i, np.uint8) for i in range(6)])
    path = write_video(frames, tmp_path / "out.mp4", 25.0)
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 6 and decoded[0].shape == (32, 48, 3)
    assert abs(int(decoded[3].mean()) - 60) <= 3
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]  # no temporary file left


# ---------------------------------------------------------------------------------------------------- tasks and models


def test_every_task_is_exported_and_known():
    assert perceiver_io.pipeline is pipeline and "pipeline" in perceiver_io.__all__
    assert list(PIPELINES) == ["fill-mask", "image-classification", "optical-flow", "multimodal-autoencoding"]


def test_model_strings_go_to_from_pretrained_as_they_are(models, monkeypatch):
    calls = []
    real = perceiver_io.from_pretrained

    def recording(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(perceiver_io, "from_pretrained", recording)
    pipe = pipeline("image-classification", model=Path(models["five"]))
    assert calls == [((models["five"],), {})]
    assert pipe.num_classes == 5 and not pipe.model.training


def test_unknown_task_lists_the_known_ones(models):
    with pytest.raises(ValueError, match=r"^task: unknown task 'fill_mask'; known tasks: fill-mask, "
                                         r"image-classification, optical-flow, multimodal-autoencoding$"):
        pipeline("fill_mask", model=models["mlm"])


def test_a_model_of_another_task_says_which_task_it_fits(models):
    with pytest.raises(ValueError, match=r"^model: '.*imagenet' holds an ImageClassifier \(it fits the "
                                         r"'image-classification' pipeline\); the 'fill-mask' pipeline takes a "
                                         r"MaskedLanguageModel$"):
        pipeline("fill-mask", model=models["imagenet"])
    module = perceiver_io.from_pretrained(models["mlm"])
    with pytest.raises(TypeError, match=r"^model: got a MaskedLanguageModel \(it fits the 'fill-mask' pipeline\); "
                                        r"the 'optical-flow' pipeline takes an OpticalFlow or an OpticalFlowConv$"):
        pipeline("optical-flow", model=module)
    with pytest.raises(TypeError, match=r"^model: got a Linear; the 'image-classification' pipeline takes an "
                                        r"ImageClassifier$"):
        pipeline("image-classification", model=torch.nn.Linear(2, 2))
    assert tasks_for(module) == ["fill-mask"]


def test_a_directory_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    # ValueError or FileNotFoundError, as from_pretrained has it; either way one line that names model and the path
    with pytest.raises((ValueError, FileNotFoundError), match=rf"^model: cannot load '{tmp_path}': .*not a model"):
        pipeline("image-classification", model=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=rf"^model: cannot load '{tmp_path / 'missing'}'"):
        pipeline("image-classification", model=tmp_path / "missing")
    with pytest.raises(TypeError, match=r"^model: expected a model \(torch.nn.Module\) or a name or path"):
        pipeline("image-classification", model=3)


def test_unknown_options_and_devices(models):
    with pytest.raises(TypeError, match=r"^fill-mask: unknown option\(s\) \['class_names'\]"):
        pipeline("fill-mask", model=models["mlm"], class_names=["a"])
    with pytest.raises(ValueError, match=r"^device: expected a torch device"):
        pipeline("fill-mask", model=models["mlm"], device="toaster")


# -------------------------------------------------------------------------------------------------------- command line


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["predict", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_image_classification_prints_top_5(models, files, capsys, classifier):
    code, out, err = _run(capsys, "image-classification", "--model", models["imagenet"], files["image0"],
                          files["jpeg"])
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 12 and lines[0] == str(files["image0"]) and lines[6] == str(files["jpeg"])
    expected = classifier([files["image0"], files["jpeg"]])
    for block, top in zip((lines[1:6], lines[7:12]), expected):
        for rank, (line, c) in enumerate(zip(block, top), 1):
            assert line.split(None, 2) == [str(rank), f"{c['score']:.4f}", c["label"]]
    code, out, _ = _run(capsys, "image-classification", "--model", models["five"], "--top-k", "2", files["image0"])
    assert code == 0 and len(out.splitlines()) == 3


def test_cli_class_names_file(models, files, capsys, tmp_path):
    (tmp_path / "names.txt").write_text("cat\ndog\nbird\nfish\nfrog\n")
    code, out, _ = _run(capsys, "image-classification", "--model", models["five"], "--class-names",
                        tmp_path / "names.txt", files["image0"])
    assert code == 0 and {line.split()[-1] for line in out.splitlines()[1:]} == {"cat", "dog", "bird", "fish", "frog"}


def test_cli_fill_mask(models, capsys):
    code, out, err = _run(capsys, "fill-mask", "--model", models["mlm"], "--top-k", "2", TEXTS[0], TEXTS[1])
    assert code == 0 and err == ""
    pipe = pipeline("fill-mask", model=models["mlm"])
    blocks = out.strip().split("\n\n")
    assert len(blocks) == 2
    for block, text in zip(blocks, TEXTS[:2]):
        assert block.splitlines()[0] == pipe(text)["filled_text"]
    # per mask its bytes, then per masked position its two candidates with their probabilities
    assert "(3 bytes)" in blocks[0] and len(blocks[0].splitlines()) == 1 + 1 + 3
    assert len(blocks[1].splitlines()) == 1 + 2 + 3


def test_cli_optical_flow_writes_a_png_per_pair(models, files, capsys, tmp_path):
    out_dir = tmp_path / "flows"
    code, out, err = _run(capsys, "optical-flow", "--model", models["optical_flow_small"], "--out", out_dir,
                          files["image2"], files["image3"], files["image3"], files["image2"])
    assert code == 0 and err == ""
    written = sorted(p.name for p in out_dir.iterdir())
    assert written == ["image2_image3_flow.png", "image3_image2_flow.png"]
    pipe = pipeline("optical-flow", model=models["optical_flow_small"])
    expected = pipe((files["image2"], files["image3"]))["image"]
    assert (out_dir / written[0]).read_bytes().startswith(PNG_MAGIC)
    assert np.array_equal(np.asarray(Image.open(out_dir / written[0])), np.asarray(expected))
    assert out.count("wrote ") == 2 and "56x40" in out


def test_cli_multimodal_writes_the_reconstruction(models, files, capsys, tmp_path):
    import wave

    code, out, err = _run(capsys, "multimodal-autoencoding", "--model", models["multimodal"], "--out",
                          tmp_path / "recon", files["clip"])
    assert code == 0 and err == ""
    with av.open(str(tmp_path / "recon" / "clip.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 8 and frames[0].shape == (32, 32, 3)
    with wave.open(str(tmp_path / "recon" / "clip.wav")) as f:
        assert (f.getnchannels(), f.getframerate(), f.getnframes()) == (1, 16000, 5120)
    lines = out.splitlines()
    assert lines[0] == str(files["clip"]) and "8 frames of 32x32 at 25 fps" in out
    assert "label (hidden from the model):" in out and len([ln for ln in lines if "class_" in ln]) == 5


@pytest.mark.parametrize("argv, message", [
    (["fill-masks", "--model", "{mlm}", "a [MASK]"], "TASK: unknown task 'fill-masks'; known tasks: fill-mask, "),
    (["fill-mask", "a [MASK]"], "--model: required"),
    (["optical-flow", "--model", "{flow}", "{image2}", "{image3}"], "--out: required for optical-flow"),
    (["optical-flow", "--model", "{flow}", "--out", "{tmp}", "{image2}"], "INPUT: optical-flow reads frames in pairs"),
    (["image-classification", "--model", "{imagenet}", "--out", "{tmp}", "{image0}"], "--out: only optical-flow"),
    (["image-classification", "--model", "{imagenet}", "{text}"], "{text} is not an image file"),
    (["image-classification", "--model", "{imagenet}", "{tmp}/missing.png"], "INPUT: no such file"),
    (["image-classification", "--model", "{tmp}", "{image0}"], "model: cannot load '{tmp}'"),
    (["fill-mask", "--model", "{imagenet}", "a [MASK]"], "holds an ImageClassifier (it fits the 'image-classif"),
    (["fill-mask", "--model", "{mlm}", "no mask"], "text[0]: no mask to fill"),
    (["multimodal-autoencoding", "--model", "{multimodal}", "--out", "{tmp}", "{fake_video}"], "cannot read video"),
    (["optical-flow", "--model", "{flow}", "--top-k", "3", "--out", "{tmp}", "{image2}", "{image3}"], "--top-k: not"),
])
def test_cli_errors_are_one_line_and_exit_code_1(models, files, capsys, tmp_path, argv, message):
    values = {**{k: str(v) for k, v in files.items()}, **models, "flow": models["optical_flow_small"],
              "tmp": str(tmp_path)}
    code, out, err = _run(capsys, *(a.format(**values) for a in argv))
    assert code == 1 and out == ""
    assert err.startswith("perceiver-io predict: error: ") and err.count("\n") == 1
    assert message.format(**values) in err


# -------------------------------------------------------------------------------------------------------- demo section


def _tiny_classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("imagenet_conv", image_size=64, encoder=IMAGE_ENCODER)


def test_demo_section_with_weights(tmp_path, monkeypatch):
    from perceiver_io.demo import pipeline as section

    monkeypatch.setattr(section, "load_model", _tiny_classifier)
    result = section.run(tmp_path, quick=True)
    assert (tmp_path / "predictions.png").read_bytes().startswith(PNG_MAGIC)
    assert [p.path for p in result.pictures] == ["predictions.png"]
    assert len(result.rows) == 10 and [r[0] for r in result.rows[::5]] == ["china.jpg", "flower.jpg"]
    predictions = result.metrics["predictions"]
    assert result.metrics["weights_in_cache"] is True and set(predictions) == {"china.jpg", "flower.jpg"}
    photos = section.sample_photographs()
    expected = pipeline("image-classification", model=_tiny_classifier())([image for _, image in photos])
    for (name, _), top in zip(photos, expected):
        assert [c["label"] for c in predictions[name]] == [c["label"] for c in top]
        assert [c["score"] for c in predictions[name]] == pytest.approx([c["score"] for c in top], abs=1e-6)
    assert result.rows[0][2] == expected[0][0]["label"] and section.MODEL_ID in result.summary
    json.dumps(result.to_dict())


def test_demo_section_without_weights_says_how_to_fetch_them(tmp_path, monkeypatch):
    from perceiver_io.demo import pipeline as section

    def missing() -> torch.nn.Module:
        raise FileNotFoundError("name_or_path: deepmind/vision-perceiver-conv is not in the local Hugging Face cache")

    monkeypatch.setattr(section, "load_model", missing)
    result = section.run(tmp_path, quick=True)
    command = ("pip install 'perceiver-io-torch[hub]' && "
               "python -c \"import perceiver_io; perceiver_io.from_pretrained('deepmind/vision-perceiver-conv')\"")
    assert section.FETCH_COMMAND == command
    assert command in result.summary and any(command in note for note in result.notes)
    assert (tmp_path / "photographs.png").read_bytes().startswith(PNG_MAGIC)
    assert [r[0] for r in result.rows] == ["china.jpg", "flower.jpg"]
    assert result.metrics["weights_in_cache"] is False and "not in the local" in result.metrics["error"]


def test_demo_section_reads_the_cache_only(monkeypatch):
    from perceiver_io.demo import SECTIONS
    from perceiver_io.demo import pipeline as section

    calls = []

    def recording(*args, **kwargs):
        calls.append((args, kwargs))
        raise FileNotFoundError("not cached")

    monkeypatch.setattr(perceiver_io, "from_pretrained", recording)
    with pytest.raises(FileNotFoundError):
        section.load_model()
    assert calls == [(("deepmind/vision-perceiver-conv",), {"local_files_only": True})]
    assert SECTIONS[-1] is section.SECTION and section.SECTION.name == "pipeline"
    assert section.SECTION.budget_s <= 60
