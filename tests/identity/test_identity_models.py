"""Landmarks and embeddings on real face pictures shipped in packages: scikit-image's astronaut
(Eileen Collins) and LFW subset, matplotlib's Grace Hopper portrait.

Same person: each portrait against variants of itself as a camera would see it (rescaled,
rotated a few degrees, darker, JPEG-compressed, shifted). Different people: the portraits
against each other and against the LFW faces. The ROC points at the configured threshold are
printed (pytest -s) and asserted at dlib's published operating point (0.6).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pytest
import skimage.data

from finrtc.identity.analysis import FaceAnalyzer
from finrtc.identity.liveness import Action, Challenge
from finrtc.identity.measures import measure
from finrtc.identity.models import PINNED_SHA256, FaceBox, FaceModels, distance, model_digests
from finrtc.identity.runtime import embed_portrait
from finrtc.identity.testing import base_head, eyes_closed, letterbox, portrait, turned

pytest.importorskip("dlib")

# Each costs one ResNet embedding (~0.1 s of CPU).
LFW_FACES = 60


@pytest.fixture(scope="module")
def models() -> FaceModels:
    return FaceModels()


def hopper_rgb() -> np.ndarray:
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def variants(rgb: np.ndarray) -> list[np.ndarray]:
    h, w = rgb.shape[:2]
    out = [cv2.resize(rgb, (int(w * 0.7), int(h * 0.7)), interpolation=cv2.INTER_AREA)]
    for angle in (-8, 6):
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        out.append(cv2.warpAffine(rgb, matrix, (w, h), borderMode=cv2.BORDER_REFLECT))
    out.append(np.clip(rgb.astype(np.float32) * 0.6, 0, 255).astype(np.uint8))
    ok, jpeg = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, 25])
    assert ok
    out.append(cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED))
    out.append(np.roll(rgb, (20, -25), axis=(0, 1)))
    return out


def embedding(models: FaceModels, rgb: np.ndarray) -> np.ndarray:
    return embed_portrait(models, portrait(rgb))


def lfw_faces() -> list[np.ndarray]:
    faces = np.load(Path(skimage.data.__file__).parent / "lfw_subset.npy")[:100]
    return [np.stack([cv2.resize((f * 255).astype(np.uint8), (150, 150), cv2.INTER_CUBIC)] * 3, -1)
            for f in faces]


def test_model_files_match_their_pins() -> None:
    digests = model_digests()
    for name, pinned in PINNED_SHA256.items():
        assert digests[name] == pinned


def test_same_person_matches_and_different_people_do_not(models: FaceModels) -> None:
    astronaut, hopper = skimage.data.astronaut(), hopper_rgb()
    references = {"astronaut": embedding(models, astronaut), "hopper": embedding(models, hopper)}
    genuine = [distance(references[name], embedding(models, v))
               for name, rgb in (("astronaut", astronaut), ("hopper", hopper)) for v in variants(rgb)]
    impostor = [distance(references["astronaut"], references["hopper"])]
    # LFW thumbnails are 25x25 face crops: the whole picture is the face box.
    for face in lfw_faces()[:LFW_FACES]:
        _, shape = models.landmarks(face[:, :, 0], FaceBox(0, 0, 149, 149))
        other = models.embed(face, shape)
        impostor += [distance(references["astronaut"], other), distance(references["hopper"], other)]
    genuine_a, impostor_a = np.array(genuine), np.array(impostor)
    print(f"\ngenuine max {genuine_a.max():.3f}, impostor min {impostor_a.min():.3f}")
    print("threshold  FAR    FRR   (genuine", len(genuine), "impostor", len(impostor), ")")
    for threshold in (0.4, 0.5, 0.55, 0.6, 0.65):
        far = float(np.mean(impostor_a <= threshold))
        frr = float(np.mean(genuine_a > threshold))
        print(f"  {threshold:.2f}    {far:.3f}  {frr:.3f}")
    assert len(impostor) == 2 * LFW_FACES + 1
    assert float(np.mean(genuine_a > 0.6)) == 0.0, genuine
    assert float(np.mean(impostor_a <= 0.6)) <= 0.02, sorted(impostor)[:5]
    assert impostor[0] > 0.6


def test_landmark_measures_follow_the_synthetic_head(models: FaceModels) -> None:
    analyzer = FaceAnalyzer(models)

    def measured(rgb: np.ndarray):  # type: ignore[no-untyped-def]
        observation = analyzer.analyze(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), None)
        assert observation.measures is not None
        return observation.measures

    rest = measured(base_head()[0])
    assert abs(rest.yaw) < 0.08 and rest.eye_openness > 0.25
    assert measured(turned(0.35)).yaw > rest.yaw + 0.22
    assert measured(turned(-0.35)).yaw < rest.yaw - 0.22
    assert measured(eyes_closed()).eye_openness < 0.5 * rest.eye_openness
    # No face: the coffee cup.
    coffee = cv2.cvtColor(letterbox(skimage.data.coffee()), cv2.COLOR_RGB2GRAY)
    assert analyzer.analyze(coffee, None).faces == 0
    assert measure(base_head()[1]).eye_openness == pytest.approx(rest.eye_openness, abs=0.05)


def test_challenge_state_machine_on_measured_frames(models: FaceModels) -> None:
    analyzer = FaceAnalyzer(models)
    frames = {
        "rest": base_head()[0], "left": turned(0.35), "right": turned(-0.35), "closed": eyes_closed(),
    }
    gray = {
        key: analyzer.analyze(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), None).measures
        for key, rgb in frames.items()
    }

    def run(actions: list[Action], script: list[str]) -> Challenge:
        challenge = Challenge("c1", "carol", actions, 0.0, 3.0)
        challenge.begin()
        for index, name in enumerate(script):
            challenge.observe(0.125 * (index + 1), gray[name] if name != "none" else None)
        return challenge

    rest3 = ["rest"] * 3
    passed = run([Action.TURN_RIGHT, Action.BLINK], [*rest3, "right", "rest", "closed", "rest"])
    assert passed.outcome == "passed" and [s.detected_at for s in passed.steps] == [0.5, 0.875]
    assert passed.steps[1].score is not None and passed.steps[1].score > 0.5
    assert run([Action.TURN_RIGHT, Action.BLINK], [*rest3, "left"]).failure == "wrong_action"
    still = run([Action.BLINK, Action.NOD], ["rest"] * 40)
    assert still.failure == "timeout" and still.steps[0].action is Action.BLINK
    assert run([Action.BLINK, Action.NOD], ["none"] * 40).failure == "no_face"
