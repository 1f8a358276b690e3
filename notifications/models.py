"""Persisted events. Each event belongs to a topic (a broad feed, ordered by the
global `id`) and optionally to a stream (a narrow feed with a contiguous `seq`)."""

from django.db import models


class EventCounter(models.Model):
    """The last sequence number handed out for one topic or stream. Updating this
    row is also the lock that orders event inserts, so ids commit in id order
    within a topic and seqs are contiguous within a stream."""

    key = models.CharField(max_length=100, primary_key=True)
    last_seq = models.PositiveBigIntegerField(default=0)
    closed = models.BooleanField(
        default=False, help_text="Its final event was recorded; kept when events are pruned."
    )
    pruned_through = models.PositiveBigIntegerField(
        default=0,
        db_default=0,  # the counter upsert (notifications.services._next_seq) omits it
        help_text="The highest cursor (a topic's id, a stream's seq) whose event was pruned: "
        "a client resuming below it would miss events (close 4410).",
    )

    def __str__(self) -> str:
        return f"{self.key} @ {self.last_seq}"


class Event(models.Model):
    topic = models.CharField(max_length=100)
    # NULL, not "": events outside a stream must not collide in unique_stream_seq.
    stream = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001
    seq = models.PositiveBigIntegerField(null=True, blank=True)
    topic_seq = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="Its place in its topic (1, 2, 3 …, the topic counter): lets a process "
        "tell a gap in a topic's live events. Internal, not sent to clients.",
    )
    type = models.CharField(max_length=40)
    body = models.JSONField()
    final = models.BooleanField(
        default=False, help_text="The last event of its stream: subscribers close after it."
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["stream", "seq"], name="unique_stream_seq"),
        ]
        indexes = [models.Index(fields=["topic", "id"])]

    def __str__(self) -> str:
        return f"{self.type} #{self.id}"

    def as_message(self) -> dict:
        """What a subscriber receives: the body plus the store's cursors."""
        return {**self.body, "id": self.id, "seq": self.seq}


class ConnectionCount(models.Model):
    """How many WebSocket connections one server process had open when it last
    reported (notifications.connections). A row not refreshed for a few report
    intervals belongs to a process that stopped, and counts for nothing."""

    process = models.CharField(max_length=200, primary_key=True)
    connections = models.PositiveIntegerField()
    reported_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.process}: {self.connections}"
