"""One worker of a 2-process MultiWorkerMirroredStrategy `model.fit` with AGC (TF backend).

Run by tests/test_agc_multiworker.py: ``python tests/agc_mwms_worker.py INDEX PORT0,PORT1 OUT.npz``.
Trains the AGC test model for one epoch (3 global batches of 16, 8 per worker) and saves its
weights and logs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

index, ports, out = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
os.environ["TF_CONFIG"] = json.dumps(
    {
        "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
        "task": {"type": "worker", "index": index},
    }
)
os.environ["KERAS_BACKEND"] = "tensorflow"
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from agc_common import build_model, compile_model, make_data  # noqa: E402

from keras_nfnet import distribute_compat  # noqa: E402

strategy = tf.distribute.MultiWorkerMirroredStrategy()
x, y = make_data(48)
options = tf.data.Options()
# docs/platform_facts.md: in-memory datasets under MWMS need DATA sharding.
options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).with_options(options)
with strategy.scope():
    model = compile_model(build_model())
history = model.fit(dataset, epochs=1, verbose=0, shuffle=False)
np.savez(
    out,
    replicas=strategy.num_replicas_in_sync,
    workaround=distribute_compat.workaround_enabled(),
    loss=history.history["loss"][-1],
    fraction=history.history["agc_clip_fraction"][-1],
    **{f"w_{i}": w for i, w in enumerate(model.get_weights())},
)
