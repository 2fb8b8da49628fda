"""Inference payloads: a model server's request and response as feature rows and predictions.

Model servers speak two JSON dialects (docs/model-servers.md):

- V1 (TensorFlow Serving style, KServe's v1): a request `{"instances": [...]}`, one
  instance per row, an object of named values or a list of positional ones; a response
  `{"predictions": [...]}`, one per row.
- V2, the Open Inference Protocol (KServe v2, Triton, MLServer, Seldon Core v2): a
  request `{"inputs": [tensor, ...]}` and a response `{"outputs": [tensor, ...]}`, each
  tensor `{"name", "datatype", "shape", "data"}` whose data holds the whole batch in
  row-major order (flat, or nested as its shape), the first dimension being the rows.

A monitor's `inference` section maps tensor names, or positions, to its features and
names the output tensor that holds the prediction. What does not fit the mapping
raises InferenceError naming the payload field, the problem and what is allowed.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from driftline.core.limits import ModelVersion
from driftline.core.prediction import PredictionSpec

FeatureName = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
TensorName = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class InferenceSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How a monitor reads its model server's payloads (docs/model-servers.md).

    `inputs`: V2 input tensor name -> the features its columns hold, in column order (a
    `[rows]` or `[rows, 1]` tensor holds one); `[]` ignores a tensor. A tensor not
    listed whose name is a feature holds that feature; any other tensor is an error.
    `instances`: the feature at each position of a V1 instance sent as a list.
    `output`: the V2 output tensor holding the prediction (default: the only output).
    """

    inputs: dict[TensorName, Annotated[list[FeatureName], msgspec.Meta(max_length=10_000)]] = {}
    instances: Annotated[list[FeatureName], msgspec.Meta(max_length=10_000)] = []
    output: TensorName | None = None


DIRECT = InferenceSpec()
"""No mapping: tensors named as features, V1 instances as objects, the only output tensor."""


def spec_problem(spec: InferenceSpec, features: Collection[str]) -> str | None:
    """What is wrong with a monitor's `inference` section (the field and why), or None."""
    mapped = [(f"inputs.{tensor}", name) for tensor, names in spec.inputs.items() for name in names]
    positional = [("instances", name) for name in spec.instances]
    for places in (mapped, positional):
        seen: set[str] = set()
        for where, name in places:
            if name not in features:
                return (
                    f"{where}: {name!r} is not a feature of the baseline "
                    f"(has {', '.join(sorted(features))})"
                )
            if name in seen:
                return f"{where}: {name!r} is mapped twice"
            seen.add(name)
    return None


# ------------------------------------------------------------------------- payloads

DATATYPES = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
)


class Tensor(msgspec.Struct, frozen=True):
    """One V2 tensor: the whole batch's values, row-major, flat or nested as `shape`."""

    name: str
    datatype: str
    shape: list[Annotated[int, msgspec.Meta(ge=0)]]
    data: list[Any]


class InferenceRequest(msgspec.Struct, frozen=True):
    """A model server's request body: V2 `inputs` or V1 `instances` (other fields ignored)."""

    inputs: list[Tensor] | None = None
    instances: list[Any] | None = None


class InferenceResponse(msgspec.Struct, frozen=True):
    """A model server's response body: V2 `outputs` or V1 `predictions` (other fields ignored)."""

    outputs: list[Tensor] | None = None
    predictions: list[Any] | None = None
    model_version: ModelVersion | None = None


class InferenceError(ValueError):
    """A payload that does not fit the monitor: the field at fault and what is allowed."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _describe(value: Any) -> str:
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= 40 else text[:37] + "..."


def _flat(data: list[Any]) -> list[Any]:
    """Nested data (as its shape) flattened in row-major order."""
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if type(value) is list:
                stack.append(iter(value))
                break
            out.append(value)
        else:
            stack.pop()
    return out


# null is no element of any datatype; taken as a missing value, as in an event.
_MISSING = type(None)


def _accepts(datatype: str) -> tuple[str, frozenset[type], bool]:
    """What a datatype's elements must be: a description, the Python types allowed, unsigned."""
    if datatype == "BOOL":
        return "a boolean", frozenset((bool, _MISSING)), False
    if datatype == "BYTES":
        return "a string", frozenset((str, _MISSING)), False
    if datatype.startswith("UINT"):
        return "a non-negative integer", frozenset((int, _MISSING)), True
    if datatype.startswith("INT"):
        return "an integer", frozenset((int, _MISSING)), False
    return "a number", frozenset((float, int, _MISSING)), False


# Looked up once per tensor: a request carries a tensor per feature, so this is per-event work.
_ACCEPTED = {datatype: _accepts(datatype) for datatype in DATATYPES}


def _first_bad(values: list[Any], allowed: frozenset[type], unsigned: bool) -> int | None:
    """The index of the first value not of the datatype, if any."""
    return next(
        (
            i
            for i, v in enumerate(values)
            if type(v) not in allowed or (unsigned and v is not None and v < 0)
        ),
        None,
    )


def tensor_columns(tensor: Tensor, field: str, index: int) -> tuple[int, list[list[Any]]]:
    """A tensor's rows and its columns' values: `[rows]` is one column, `[rows, k]` k columns.

    `field[index]` is where the tensor sits in its payload, as errors name it.
    """
    accepted = _ACCEPTED.get(tensor.datatype)
    if accepted is None:
        raise InferenceError(
            f"{field}[{index}].datatype",
            f"expected one of {', '.join(DATATYPES)}, got {_describe(tensor.datatype)}",
        )
    shape = tensor.shape
    dims = len(shape)
    if dims != 1 and dims != 2:
        raise InferenceError(
            f"{field}[{index}].shape",
            f"expected [rows] or [rows, columns], got {_describe(shape)}",
        )
    values = tensor.data
    kinds = set(map(type, values))  # the type scan runs in C
    if list in kinds:
        values = _flat(values)
        kinds = set(map(type, values))
    rows = shape[0]
    width = shape[1] if dims == 2 else 1
    if len(values) != rows * width:
        raise InferenceError(
            f"{field}[{index}].data",
            f"expected {rows * width} values (shape {_describe(shape)}), got {len(values)}",
        )
    what, allowed, unsigned = accepted
    if unsigned or not kinds <= allowed:
        bad = _first_bad(values, allowed, unsigned)
        if bad is not None:
            raise InferenceError(
                f"{field}[{index}].data[{bad}]",
                f"expected {what} (datatype {tensor.datatype}), got {_describe(values[bad])}",
            )
    if width == 1:
        return rows, [values]
    return rows, [values[j::width] for j in range(width)]


@dataclass(frozen=True, slots=True)
class Columns:
    """A V2 request's feature values as its tensors hold them: a list per feature, `size` long."""

    size: int
    values: dict[str, list[Any]]

    def rows(self) -> list[dict[str, Any]]:
        """The feature values of each row."""
        names = list(self.values)
        return [
            dict(zip(names, row, strict=True)) for row in zip(*self.values.values(), strict=True)
        ]


Inputs = Columns | list[dict[str, Any]]
"""A request's feature values: by column (V2 tensors) or a mapping per row (V1 instances)."""


def input_rows(inputs: Inputs) -> list[dict[str, Any]]:
    """The feature values of each row of a request."""
    return inputs.rows() if isinstance(inputs, Columns) else inputs


def input_size(inputs: Inputs) -> int:
    """A request's number of rows."""
    return inputs.size if isinstance(inputs, Columns) else len(inputs)


def _v2_columns(spec: InferenceSpec, features: Collection[str], inputs: list[Tensor]) -> Columns:
    rows = -1
    first = 0
    columns: dict[str, list[Any]] = {}
    mapped = spec.inputs
    # A request carries a tensor per feature: this loop is per-feature work on every
    # logged request, so its common case (a tensor named as a feature) is kept short.
    for i, tensor in enumerate(inputs):
        name = tensor.name
        names = mapped.get(name)
        if names is None and name not in features:
            raise InferenceError(
                f"inputs[{i}].name",
                f"unknown tensor {_describe(name)}: neither mapped in the monitor's "
                f"inference.inputs ({', '.join(mapped) or 'none'}) nor a feature; map it "
                "to features, or to [] to ignore it",
            )
        if names is not None and not names:
            continue
        count, values = tensor_columns(tensor, "inputs", i)
        held = 1 if names is None else len(names)
        if len(values) != held:
            wanted = f"[rows, {held}]" if held > 1 else "[rows] or [rows, 1]"
            listed = name if names is None else ", ".join(names)
            raise InferenceError(
                f"inputs[{i}].shape",
                f"tensor {name!r} holds {held} feature(s) ({listed}): "
                f"expected {wanted}, got {_describe(tensor.shape)}",
            )
        if rows < 0:
            rows, first = count, i
        elif count != rows:
            raise InferenceError(
                f"inputs[{i}].shape",
                f"expected {rows} rows (as inputs[{first}] has), got {count}",
            )
        if names is None:
            columns[name] = values[0]
        else:
            columns.update(zip(names, values, strict=True))
    if rows < 0:
        raise InferenceError("inputs", "no input tensor holds a feature of the monitor")
    return Columns(rows, columns)


def _v1_rows(spec: InferenceSpec, instances: list[Any]) -> list[dict[str, Any]]:
    positions = spec.instances
    rows: list[dict[str, Any]] = []
    for i, instance in enumerate(instances):
        if isinstance(instance, dict):
            rows.append(instance)
            continue
        values = instance if isinstance(instance, list) else [instance]
        if not positions:
            raise InferenceError(
                f"instances[{i}]",
                f"expected an object of named feature values, got {_describe(instance)}; "
                "for positional instances name each position in the monitor's "
                "inference.instances",
            )
        if len(values) != len(positions):
            raise InferenceError(
                f"instances[{i}]",
                f"expected {len(positions)} values ({', '.join(positions)}), got {len(values)}",
            )
        rows.append(dict(zip(positions, values, strict=True)))
    return rows


def request_inputs(
    spec: InferenceSpec, features: Collection[str], request: InferenceRequest
) -> Inputs:
    """A request's feature values: by column from V2 `inputs`, by row from V1 `instances`."""
    if request.inputs is not None:
        return _v2_columns(spec, features, request.inputs)
    if request.instances is not None:
        return _v1_rows(spec, request.instances)
    raise InferenceError(
        "inputs", "required: a V2 request has `inputs` (tensors), a V1 request `instances`"
    )


def _output_tensor(spec: InferenceSpec, outputs: list[Tensor]) -> tuple[int, Tensor]:
    names = ", ".join(repr(t.name) for t in outputs) or "none"
    if spec.output is not None:
        found = next((i for i, t in enumerate(outputs) if t.name == spec.output), None)
        if found is None:
            raise InferenceError(
                "outputs",
                f"no tensor {spec.output!r} (the monitor's inference.output); got {names}",
            )
        return found, outputs[found]
    if len(outputs) != 1:
        raise InferenceError(
            "outputs",
            f"expected one tensor, got {len(outputs)} ({names}); name the prediction's in "
            "the monitor's inference.output",
        )
    return 0, outputs[0]


def _unwrapped(value: Any) -> Any:
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def response_predictions(
    spec: InferenceSpec, prediction: PredictionSpec, response: InferenceResponse
) -> list[Any]:
    """Each row's prediction, as an event's `prediction` (checked later against the kind)."""
    probabilities = prediction.kind == "probabilities"
    if response.outputs is not None:
        index, tensor = _output_tensor(spec, response.outputs)
        where = f"outputs[{index}]"
        _, columns = tensor_columns(tensor, "outputs", index)
        if probabilities:
            if len(columns) != len(prediction.classes):
                raise InferenceError(
                    f"{where}.shape",
                    f"a probabilities prediction has one column per class "
                    f"({len(prediction.classes)}): expected [rows, {len(prediction.classes)}], "
                    f"got {_describe(tensor.shape)}",
                )
            return [list(row) for row in zip(*columns, strict=True)]
        if len(columns) != 1:
            raise InferenceError(
                f"{where}.shape",
                f"a {prediction.kind} prediction is one value per row: expected [rows] or "
                f"[rows, 1], got {_describe(tensor.shape)}",
            )
        return columns[0]
    if response.predictions is not None:
        if probabilities:
            return response.predictions
        return [_unwrapped(value) for value in response.predictions]
    raise InferenceError(
        "outputs", "required: a V2 response has `outputs` (tensors), a V1 response `predictions`"
    )
