"""The embedded default's broker (a folder of message files): messages published by several
producers while a consumer drains the folder all arrive, whole, exactly once. Encoding each
message is slowed down so that a message is always being written while the consumer lists the
folder: kombu's own filesystem transport then hands the consumer empty messages (what stopped a
run worker in a benchmark), ours does not."""

import json
import threading
import time
from pathlib import Path

import kombu
import pytest
from kombu.transport import filesystem

from export_pipelines.orchestration import disk_broker

MESSAGES_PER_PRODUCER = 40


def _roundtrip(scheme: str, folder: Path) -> tuple[list[int], list[str]]:
    options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "control_folder": str(folder / "c"),
        "polling_interval": 0.005,
    }
    (folder / "c").mkdir(parents=True)
    queue = kombu.Queue("runs", routing_key="runs")
    received: list[int] = []
    errors: list[str] = []
    done = threading.Event()

    def produce(offset: int) -> None:
        with kombu.Connection(f"{scheme}://", transport_options=options) as connection:
            producer = connection.Producer()
            for number in range(offset, offset + MESSAGES_PER_PRODUCER):
                producer.publish({"n": number}, routing_key="runs", declare=[queue])

    def consume() -> None:
        with kombu.Connection(f"{scheme}://", transport_options=options) as connection:
            simple = connection.SimpleQueue(queue)
            while not done.is_set() or len(received) < 2 * MESSAGES_PER_PRODUCER:
                try:
                    message = simple.get(timeout=0.2)
                except simple.Empty:
                    if done.is_set():
                        return
                    continue
                except Exception as error:  # what stops a worker
                    errors.append(type(error).__name__)
                    continue
                received.append(message.payload["n"])
                message.ack()

    consumer = threading.Thread(target=consume)
    consumer.start()
    producers = [threading.Thread(target=produce, args=(i * MESSAGES_PER_PRODUCER,)) for i in range(2)]
    for thread in producers:
        thread.start()
    for thread in producers:
        thread.join()
    done.set()
    consumer.join(timeout=120)
    return received, errors


@pytest.fixture
def slow_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow_dumps(payload: object) -> str:
        time.sleep(0.02)
        return json.dumps(payload)

    monkeypatch.setattr(filesystem, "dumps", slow_dumps)
    monkeypatch.setattr(disk_broker, "dumps", slow_dumps)


def test_every_message_arrives_whole_and_once(tmp_path: Path, slow_encoding: None) -> None:
    received, errors = _roundtrip(disk_broker.SCHEME, tmp_path / "queue")
    assert errors == []
    assert sorted(received) == list(range(2 * MESSAGES_PER_PRODUCER))


def test_kombus_own_transport_loses_that_race(tmp_path: Path, slow_encoding: None) -> None:
    _received, errors = _roundtrip("filesystem", tmp_path / "queue")
    assert "JSONDecodeError" in errors  # the error that stopped the run worker
