"""Protobuf messages -> JSON-ready values: proto field names, integers as numbers, enums by name, bytes as base64.

Generic over the descriptor, so a field added to a proto later shows up in the HTTP answers without a route
change. Scalars and repeated fields are always present (as proto3 defaults where unset), sub-messages only
when set, so the answer does not grow empty nested objects.
"""

from __future__ import annotations

import base64

from google.protobuf.descriptor import FieldDescriptor

_TYPE_BYTES = FieldDescriptor.TYPE_BYTES
_TYPE_ENUM = FieldDescriptor.TYPE_ENUM
_TYPE_MESSAGE = FieldDescriptor.TYPE_MESSAGE


def proto_to_dict(message) -> dict:
    out = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {k: _scalar(value_field, v) for k, v in value.items()}
        elif _is_repeated(field):
            out[field.name] = [_scalar(field, v) for v in value]
        elif field.type == _TYPE_MESSAGE:
            if message.HasField(field.name):
                out[field.name] = proto_to_dict(value)
        elif field.has_presence and not message.HasField(field.name):
            continue  # an unset optional scalar (or oneof member) is absent, not a default
        else:
            out[field.name] = _scalar(field, value)
    return out


def _is_repeated(field) -> bool:
    return getattr(field, "is_repeated", None) or field.label == FieldDescriptor.LABEL_REPEATED


def _scalar(field, value):
    if field.type == _TYPE_MESSAGE:
        return proto_to_dict(value)
    if field.type == _TYPE_ENUM:
        enum = field.enum_type.values_by_number.get(value)
        return enum.name if enum is not None else value
    if field.type == _TYPE_BYTES:
        return base64.b64encode(value).decode()
    return value
