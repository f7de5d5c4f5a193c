import numpy as np
import pytest

from data.actions import BUTTONS, DEFAULT_ACTIONS, ActionContractError, ActionSpec


def test_sizes_and_gym_space_match():
    space = DEFAULT_ACTIONS.gym_space()
    assert list(space.nvec) == list(DEFAULT_ACTIONS.sizes) == [3, 3, 7, 2, 2]
    assert DEFAULT_ACTIONS.gym_space().contains(DEFAULT_ACTIONS.noop())


def test_buttons_follow_the_table():
    spec = DEFAULT_ACTIONS
    b = dict(zip(BUTTONS, spec.to_buttons(spec.make(move=1, strafe=2, turn=6, attack=1, use=0))))
    assert b == {
        "MOVE_FORWARD": 1,
        "MOVE_BACKWARD": 0,
        "MOVE_LEFT": 0,
        "MOVE_RIGHT": 1,
        "TURN_LEFT_RIGHT_DELTA": 7.0,
        "ATTACK": 1,
        "USE": 0,
    }
    b = dict(zip(BUTTONS, spec.to_buttons(spec.make(move=2, strafe=1, turn=0, use=1))))
    assert (
        b["MOVE_BACKWARD"] == 1
        and b["MOVE_LEFT"] == 1
        and b["TURN_LEFT_RIGHT_DELTA"] == -7.0
        and b["USE"] == 1
    )
    assert spec.to_buttons(spec.noop()) == [0.0] * len(BUTTONS)


def test_dict_round_trip_and_mismatch_is_an_error():
    d = DEFAULT_ACTIONS.to_dict()
    assert ActionSpec.from_dict(d) == DEFAULT_ACTIONS
    DEFAULT_ACTIONS.check_compatible(d, "here")
    other = ActionSpec(turn_degrees_per_tic=(-5.0, 0.0, 5.0))
    with pytest.raises(ActionContractError, match="somefile.*mismatch"):
        DEFAULT_ACTIONS.check_compatible(other.to_dict(), "somefile")
    with pytest.raises(ActionContractError, match="sizes"):
        ActionSpec.from_dict({**d, "sizes": [3, 3, 5, 2, 2]})
    with pytest.raises(ActionContractError):
        ActionSpec(turn_degrees_per_tic=(-1.0, 1.0))


def test_validate_rejects_out_of_range():
    DEFAULT_ACTIONS.validate(np.array([[2, 2, 6, 1, 1], [0, 0, 0, 0, 0]]))
    with pytest.raises(ActionContractError, match="out of range"):
        DEFAULT_ACTIONS.validate(np.array([[0, 0, 7, 0, 0]]))
    with pytest.raises(ActionContractError, match="5 fields"):
        DEFAULT_ACTIONS.validate(np.zeros((3, 4), int))
