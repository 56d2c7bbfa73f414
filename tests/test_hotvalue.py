"""hot_value: the hot events keep every property of a frozen dataclass, with a cheaper constructor."""
from __future__ import annotations

import dataclasses
import inspect

import pytest

from voicegw.call.actions import ToCaller, ToModel
from voicegw.hotvalue import hot_value
from voicegw.realtime import events as ev
from voicegw.telephony import base as tel

HOT = [tel.CallerAudio, tel.MarkPlayed, tel.PlayAudio, tel.PlayMark, ev.AppendAudio, ev.AudioDelta, ToCaller, ToModel]


def _plain(cls: type) -> type:
    """The same class as the dataclass decorator alone builds it."""
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    spec = {f.name: f.type for f in dataclasses.fields(cls)}
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    ns = {"__annotations__": spec, **defaults}
    return dataclasses.dataclass(frozen=True, slots="__slots__" in cls.__dict__, eq=params.eq)(
        type(cls.__name__, (), ns))


def _sample(cls: type) -> tuple[list, dict]:
    args: list = []
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING:
            args.append(ev.AppendAudio("QUJD") if f.name == "command" else tel.PlayAudio("QUJD")
                        if f.name == "intent" else 7 if f.type in ("int", int) else f"{f.name}-v")
    return args, {}


@pytest.mark.parametrize("cls", HOT, ids=lambda c: c.__name__)
def test_a_hot_value_behaves_as_the_frozen_dataclass(cls: type) -> None:
    plain = _plain(cls)
    assert inspect.signature(cls) == inspect.signature(plain)
    args, _ = _sample(cls)
    a, b = cls(*args), cls(*args)
    reference = plain(*args)
    assert dataclasses.asdict(a) == dataclasses.asdict(reference)  # every field set, defaults included
    assert repr(a) == repr(reference).replace(plain.__qualname__, cls.__qualname__)
    assert a == b and hash(a) == hash(b)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(a, dataclasses.fields(cls)[0].name, "changed")
    if len(dataclasses.fields(cls)) > len(args):  # a default given by keyword lands in its field
        extra = dataclasses.fields(cls)[len(args)]
        value = 3 if extra.type in ("int", int) else "kw"
        assert getattr(cls(*args, **{extra.name: value}), extra.name) == value


def test_keyword_arguments_and_missing_ones_are_checked_as_before() -> None:
    d = ev.AudioDelta(item_id="i", response_id="r", audio_b64="QUJD")
    assert (d.response_id, d.item_id, d.audio_b64, d.content_index) == ("r", "i", "QUJD", 0)
    with pytest.raises(TypeError):
        ev.AudioDelta("r", "i")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        tel.CallerAudio("QUJD", 0, 0, 0)  # type: ignore[call-arg]


def test_classes_it_cannot_keep_whole_are_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class WithPostInit:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True)
    class WithFactory:
        a: list = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(frozen=True)
    class WithFieldOutOfInit:
        a: int = dataclasses.field(default=0, init=False)

    @dataclasses.dataclass
    class NotFrozen:
        a: int

    for cls in (WithPostInit, WithFactory, WithFieldOutOfInit, NotFrozen):
        with pytest.raises(TypeError):
            hot_value(cls)
