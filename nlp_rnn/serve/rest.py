"""TF Serving's REST API in JSON: requests in, numpy inputs; numpy outputs, responses out.

The shapes follow https://www.tensorflow.org/tfx/serving/api_rest:

* row form: ``{"signature_name": ..., "instances": [...]}`` -> ``{"predictions": [...]}``.
  An instance is an object of named inputs, or a bare value when the signature has one input.
  Every batched input is stacked along a new first dimension. With one output each prediction is
  that output's value; with several it is an object of them.
* columnar form: ``{"signature_name": ..., "inputs": {name: value, ...}}`` (or a bare value for
  one input) -> ``{"outputs": value}`` with one output, ``{"outputs": {name: value}}`` with
  several.
* strings are JSON strings; binary values may be sent as ``{"b64": "..."}``, and output strings
  that are not UTF-8 come back that way.

One extension: a rank-0 input (a language model's ``temperature``) has no batch dimension, so
TF Serving's row form cannot carry it; here every instance may repeat it with the same value.

Everything here is pure Python + numpy (no TensorFlow): the server validates a request fully
before it joins a batch. ``BadRequest`` carries the HTTP status and the message.
"""

from __future__ import annotations

import base64

import numpy as np

from nlp_rnn.serve.registry import Signature, TensorInfo

INT_RANGES = {"int8": (-2**7, 2**7 - 1), "uint8": (0, 2**8 - 1), "int16": (-2**15, 2**15 - 1),
              "int32": (-2**31, 2**31 - 1), "int64": (-2**63, 2**63 - 1)}
TF_DTYPE_NAMES = {"string": "DT_STRING", "float32": "DT_FLOAT", "float64": "DT_DOUBLE",
                  "int8": "DT_INT8", "uint8": "DT_UINT8", "int16": "DT_INT16",
                  "int32": "DT_INT32", "int64": "DT_INT64", "bool": "DT_BOOL",
                  "float16": "DT_HALF", "bfloat16": "DT_BFLOAT16"}


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# ---- JSON -> numpy ---------------------------------------------------------------------------


def _scalar(value, dtype: str, where: str):
    if dtype == "string":
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except ValueError:
                raise BadRequest(f"{where}: invalid base64 in {{\"b64\": ...}}") from None
        raise BadRequest(f"{where}: expected a string, got {_kind(value)}")
    if dtype == "bool":
        if isinstance(value, bool):
            return value
        raise BadRequest(f"{where}: expected true or false, got {_kind(value)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"{where}: expected a number ({dtype}), got {_kind(value)}")
    if dtype in INT_RANGES:
        if isinstance(value, float) and not value.is_integer():
            raise BadRequest(f"{where}: expected an integer ({dtype}), got {value!r}")
        low, high = INT_RANGES[dtype]
        if not low <= value <= high:
            raise BadRequest(f"{where}: {value!r} is out of range for {dtype}")
        return int(value)
    return float(value)


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def _flatten(value, rank: int, where: str) -> tuple[tuple, list]:
    """(shape, row-major scalars) of a nested list that must be rectangular of ``rank``."""
    if rank == 0:
        if isinstance(value, list):
            raise BadRequest(f"{where}: expected a single value, got a list")
        return (), [value]
    if not isinstance(value, list):
        raise BadRequest(f"{where}: expected a list nested {rank} deep, got {_kind(value)}")
    parts = [_flatten(item, rank - 1, where) for item in value]
    if not parts:
        return (0,) * rank, []
    if any(shape != parts[0][0] for shape, _ in parts):
        raise BadRequest(f"{where}: ragged list (rows of different lengths)")
    return (len(parts),) + parts[0][0], [x for _, flat in parts for x in flat]


def to_array(value, info: TensorInfo, where: str, rank: int | None = None) -> np.ndarray:
    """A JSON value as a numpy array of the input's dtype (strings: object array of bytes)."""
    rank = info.rank if rank is None else rank
    shape, flat = _flatten(value, rank, where)
    flat = [_scalar(x, info.dtype, where) for x in flat]
    array = np.empty(len(flat), dtype=object if info.dtype == "string" else info.dtype)
    array[:] = flat
    array = array.reshape(shape)
    for axis, (want, got) in enumerate(zip(info.shape[len(info.shape) - rank:], shape)):
        if want is not None and want != got:
            raise BadRequest(f"{where}: dimension {axis} must be {want}, got {got}")
    return array


def parse_predict(body, signatures: dict[str, Signature]) -> tuple[Signature, dict, int, str]:
    """A decoded :predict body -> (signature, numpy inputs, batch rows, "row" | "columnar")."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object with \"instances\" or "
                         "\"inputs\"")
    unknown = set(body) - {"signature_name", "instances", "inputs"}
    if unknown:
        raise BadRequest(f"unknown request keys: {', '.join(sorted(unknown))} (allowed: "
                         "signature_name, instances, inputs)")
    name = body.get("signature_name") or "serving_default"
    if not isinstance(name, str) or name not in signatures:
        raise BadRequest(f"Serving signature name: {name!r} not found in signature def "
                         f"(available: {', '.join(sorted(signatures))})")
    signature = signatures[name]
    if ("instances" in body) == ("inputs" in body):
        raise BadRequest("give exactly one of \"instances\" (row form) or \"inputs\" (columnar "
                         "form)")
    if "instances" in body:
        return signature, *_row_inputs(body["instances"], signature), "row"
    return signature, *_columnar_inputs(body["inputs"], signature), "columnar"


def _check_names(given, signature: Signature, where: str) -> None:
    expected = set(signature.inputs)
    if set(given) != expected:
        missing, extra = sorted(expected - set(given)), sorted(set(given) - expected)
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
            ([f"unknown {', '.join(extra)}"] if extra else [])
        raise BadRequest(f"{where}: {'; '.join(parts)} (signature {signature.name!r} takes "
                         f"{', '.join(sorted(expected))})")


def _row_inputs(instances, signature: Signature) -> tuple[dict, int]:
    if not isinstance(instances, list) or not instances:
        raise BadRequest("\"instances\" must be a non-empty list")
    if not isinstance(instances[0], dict) or set(instances[0]) == {"b64"}:
        if len(signature.inputs) != 1:
            raise BadRequest(f"signature {signature.name!r} takes several inputs "
                             f"({', '.join(sorted(signature.inputs))}): give each instance as "
                             "an object of them")
        (input_name,) = signature.inputs
        instances = [{input_name: x} for x in instances]
    for i, instance in enumerate(instances):
        if not isinstance(instance, dict):
            raise BadRequest(f"instances[{i}]: expected an object like instances[0], got "
                             f"{_kind(instance)}")
        _check_names(instance, signature, f"instances[{i}]")
    inputs = {}
    for input_name, info in signature.inputs.items():
        values = [instance[input_name] for instance in instances]
        if info.rank == 0:
            if any(v != values[0] for v in values):
                raise BadRequest(f"{input_name}: a rank-0 input takes one value per request; "
                                 "the instances disagree")
            inputs[input_name] = to_array(values[0], info, input_name)
        else:
            inputs[input_name] = to_array(values, info, input_name)
    return inputs, len(instances)


def _columnar_inputs(given, signature: Signature) -> tuple[dict, int]:
    if not isinstance(given, dict) or set(given) == {"b64"}:
        if len(signature.inputs) != 1:
            raise BadRequest(f"signature {signature.name!r} takes several inputs "
                             f"({', '.join(sorted(signature.inputs))}): \"inputs\" must be an "
                             "object of them")
        given = {next(iter(signature.inputs)): given}
    _check_names(given, signature, "inputs")
    inputs = {name: to_array(given[name], info, name) for name, info in signature.inputs.items()}
    rows = {name: value.shape[0] for name, value in inputs.items() if value.ndim}
    if len(set(rows.values())) > 1:
        raise BadRequest(f"inputs disagree on the batch size: "
                         f"{', '.join(f'{k} {v}' for k, v in sorted(rows.items()))}")
    batch = next(iter(rows.values()), 1)
    if batch == 0:
        raise BadRequest("empty batch: every input has 0 rows")
    return inputs, batch


# ---- numpy -> JSON ---------------------------------------------------------------------------


def _json_value(value):
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    return value


def to_json(array: np.ndarray):
    return _json_value(array.tolist())


def format_predict(outputs: dict, form: str) -> dict:
    """TF Serving's response for numpy ``outputs`` (each batched along its first dimension)."""
    names = sorted(outputs)
    if form == "columnar":
        if len(names) == 1:
            return {"outputs": to_json(outputs[names[0]])}
        return {"outputs": {name: to_json(outputs[name]) for name in names}}
    columns = {name: to_json(outputs[name]) for name in names}
    rows = len(next(iter(columns.values())))
    if len(names) == 1:
        return {"predictions": columns[names[0]]}
    return {"predictions": [{name: columns[name][i] for name in names} for i in range(rows)]}


def signature_def(signature: Signature) -> dict:
    """TF Serving's JSON of a SignatureDef (as GetModelMetadata returns it)."""
    def tensor(name: str, info: TensorInfo) -> dict:
        return {"dtype": TF_DTYPE_NAMES.get(info.dtype, f"DT_{info.dtype.upper()}"),
                "tensor_shape": {"dim": [{"size": str(-1 if d is None else d), "name": ""}
                                         for d in info.shape], "unknown_rank": False},
                "name": f"{signature.name}_{name}:0"}

    return {"inputs": {n: tensor(n, i) for n, i in signature.inputs.items()},
            "outputs": {n: tensor(n, i) for n, i in signature.outputs.items()},
            "method_name": "tensorflow/serving/predict", "defaults": {}}
