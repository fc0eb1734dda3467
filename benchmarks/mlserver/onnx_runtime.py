"""A minimal MLServer custom runtime serving an ONNX file with onnxruntime (the peer in the benchmark).

It is what a user of MLServer would write: decode the input tensor, run the session, encode the output.
MLServer's adaptive batching (model-settings.json max_batch_size / max_batch_time) groups the requests.
"""

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntimeModel(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # As cnnserve builds its sessions: the config's thread count, pool threads that sleep between runs.
        extra = self.settings.parameters.extra or {}
        if extra.get("intra_op_threads"):
            options.intra_op_num_threads = int(extra["intra_op_threads"])
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session = ort.InferenceSession(self.settings.parameters.uri, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        outputs = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(x)})
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output(name, y) for name, y in zip(self.output_names, outputs, strict=True)],
        )
