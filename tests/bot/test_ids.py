import uuid

from bot.models import short_id, time_ordered_uuid


def test_time_ordered_ids_are_version_7_and_grow_with_time() -> None:
    ids = [time_ordered_uuid() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    parsed = [uuid.UUID(i) for i in ids]
    assert {u.version for u in parsed} == {7}
    assert {u.variant for u in parsed} == {uuid.RFC_4122}
    millis = [u.int >> 80 for u in parsed]
    assert millis == sorted(millis)  # the time is the start: index order is time order
    assert len({short_id(i) for i in ids}) == len(ids)  # the random end tells them apart
