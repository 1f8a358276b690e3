"""The shapes of GET /usage/ (DESIGN §4 "Usage and budgets"): its query, and its
answer of totals, groups and the day's budget."""

from drf_spectacular.utils import (
    extend_schema_serializer,
)
from rest_framework import serializers

from generation import usage_report


class UsageQuerySerializer(serializers.Serializer):
    """`GET /usage/`'s query: a period of UTC days, both included (default: today;
    `until` defaults to today, `since` to `until`), an optional grouping, and for
    staff whose usage."""

    since = serializers.DateField(required=False, help_text="First UTC day (YYYY-MM-DD).")
    until = serializers.DateField(
        required=False,
        help_text=f"Last UTC day, included; at most {usage_report.MAX_DAYS} days after since.",
    )
    group_by = serializers.ChoiceField(usage_report.API_GROUPS, required=False)
    user = serializers.CharField(
        required=False,
        max_length=150,
        help_text="Staff: whose usage (a username). Anyone else's answers 404 to a user "
        "who is not staff.",
    )

    def validate(self, attrs: dict) -> dict:
        since, until = usage_report.default_period(
            since=attrs.get("since"), until=attrs.get("until"), today=usage_report.today_utc()
        )
        usage_report.check_period(since=since, until=until)
        return attrs | {"since": since, "until": until}


class UsageFiguresSerializer(serializers.Serializer):
    generations = serializers.IntegerField(
        help_text="Attempts: one generation of one pair, however many requests it made."
    )
    requests = serializers.IntegerField(
        help_text="Provider requests (re-asks and failovers each count)."
    )
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    cost = serializers.DecimalField(
        max_digits=None,
        decimal_places=10,
        allow_null=True,
        help_text="In `currency`; null when any request counted here was of a model "
        "GENERATION_PRICES has no price for.",
    )


class UsageGroupSerializer(UsageFiguresSerializer):
    key = serializers.CharField(
        help_text="The day (YYYY-MM-DD), roadmap id, content type or model of the group."
    )


class UsageBudgetSerializer(serializers.Serializer):
    """Today's tokens (UTC) against the user's daily budget."""

    daily_tokens = serializers.IntegerField(allow_null=True, help_text="Null: unlimited.")
    used = serializers.IntegerField()
    reserved = serializers.IntegerField(help_text="Held by generations in flight.")
    remaining = serializers.IntegerField(allow_null=True, help_text="Null: unlimited.")
    resets_at = serializers.DateTimeField()


@extend_schema_serializer(many=False)  # the answer of a `list` action, yet one object
class UsageSerializer(serializers.Serializer):
    """What a user's generations used over a period: in all, per group (empty
    without `group_by`), and today's budget."""

    since = serializers.DateField()
    until = serializers.DateField()
    currency = serializers.CharField(
        help_text="GENERATION_PRICES' currency (empty when no price is configured)."
    )
    totals = UsageFiguresSerializer()
    groups = UsageGroupSerializer(many=True)
    budget = UsageBudgetSerializer()
