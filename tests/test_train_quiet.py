"""No network call and no warning the user did not ask for (issue 13, failure 9): a tiny-model train that
loads the team and saves a new version, with HF_HUB_OFFLINE unset and the Hub endpoint pointed at a loopback
listener that counts connections, makes no connection and prints nothing on stderr."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SCRIPT = """
from teamtr_adapters.registry import Registry
from teamtr_adapters.train.stage import TrainConfig, Trainer, run_stages
reg = Registry()
cfg = TrainConfig(steps=2, group_size=4, prompts=2, max_new_tokens=4, lr=1e-2, delta=0.05, order="critic")
with Trainer(reg, "tiny-duo", cfg, dtype="float32", device="cpu", single_role="critic",
             reward_fn=lambda ep: float(ep.turns[-1].message_ids[0] % 2 == 0)) as t:
    result = run_stages(t, 1)
print(sum(1 for r in result.records if r.version))
"""


def test_train_and_save_make_no_network_call_and_print_no_warning(tiny_team):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    connections: list[str] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            connections.append(conn.recv(200).decode(errors="replace").split("\r\n")[0])
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{listener.getsockname()[1]}", PYTHONPATH=str(REPO),
               TEAMTR_HOME=str(tiny_team.home), PYTHONWARNINGS="default")
    try:
        r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=REPO, capture_output=True, text=True,
                           timeout=600)
    finally:
        done.set()
        thread.join()
        listener.close()
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.split()[-1]) >= 1  # a version was saved
    assert connections == []
    assert "Unable to fetch" not in r.stderr and "Warning" not in r.stderr and r.stderr == ""
