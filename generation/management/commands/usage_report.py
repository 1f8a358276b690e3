"""What generations cost (DESIGN §7), from the same reader as GET /usage/
(generation.usage_report): everyone's by default, one user's with --user."""

import argparse
import csv
import datetime as dt

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from generation import usage_report
from generation.usage_report import Figures, Report

COLUMNS = ["generations", "requests", "prompt_tokens", "completion_tokens", "cost"]


def day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text}") from None


class Command(BaseCommand):
    help = (
        "Tokens and cost of generations over a period of UTC days (default: today), "
        "in all and per group. `cost` is empty where a model in the row has no price."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--since", type=day, metavar="YYYY-MM-DD", help="First UTC day.")
        parser.add_argument(
            "--until", type=day, metavar="YYYY-MM-DD", help="Last UTC day, included."
        )
        parser.add_argument("--user", metavar="USERNAME", help="One user's (default: everyone's).")
        parser.add_argument("--group-by", choices=list(usage_report.GROUP_KEYS))
        parser.add_argument("--format", choices=["table", "csv"], default="table")

    def handle(self, *args, **options) -> None:
        user = None
        if options["user"]:
            try:
                user = get_user_model().objects.get(username=options["user"])
            except get_user_model().DoesNotExist:
                raise CommandError(f"No user named {options['user']!r}.") from None
        try:
            report = usage_report.usage_report(
                since=options["since"],
                until=options["until"],
                group_by=options["group_by"],
                user=user,
            )
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
        rows = [(group.key, group) for group in report.groups] + [("total", report.totals)]
        if options["format"] == "csv":
            self.write_csv(report, rows)
        else:
            self.write_table(report, rows, who=options["user"] or "everyone")

    def write_csv(self, report: Report, rows: list[tuple[str | None, Figures]]) -> None:
        """A header, one row per group, then the totals (key `total`)."""
        writer = csv.writer(self.stdout, lineterminator="\n")
        writer.writerow([report.group_by or "key", *COLUMNS, "currency"])
        for key, figures in rows:
            writer.writerow([key or "", *cells(figures), report.currency])

    def write_table(
        self, report: Report, rows: list[tuple[str | None, Figures]], *, who: str
    ) -> None:
        """Aligned columns under a line naming whose usage, the period and the currency."""
        self.stdout.write(
            f"Usage of {who}, {report.since.isoformat()} to {report.until.isoformat()} (UTC)"
            + (f", cost in {report.currency}" if report.currency else "")
        )
        header = [report.group_by or "", *COLUMNS]
        lines = [header] + [[key or "(deleted user)", *cells(figures)] for key, figures in rows]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        for line in lines:
            self.stdout.write(
                "  ".join(
                    cell.ljust(width) if i == 0 else cell.rjust(width)
                    for i, (cell, width) in enumerate(zip(line, widths, strict=True))
                ).rstrip()
            )


def cells(figures: Figures) -> list[str]:
    return [
        str(figures.generations),
        str(figures.requests),
        str(figures.prompt_tokens),
        str(figures.completion_tokens),
        "" if figures.cost is None else str(figures.cost),
    ]
