"""The API's JSON parser: DRF's, except that JSON nested too deep for Python's
parser answers 400 like any other malformed body, not 500 with a traceback."""

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            # json raises it past the interpreter's recursion limit (~1,000 levels).
            raise ParseError("JSON parse error - nested too deeply.") from None
