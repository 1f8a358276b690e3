"""What Django's debug page and error e-mails may show of the settings.

Django hides a setting when its name matches API, KEY, PASS, TOKEN, SECRET…;
REDIS_URL, CELERY_BROKER_URL, the Redis hosts inside CHANNEL_LAYERS and the cache's
LOCATION match none of these, yet carry the password in the value
(`redis://:password@host`). A DEBUG=1 server that fails would show them."""

import re
from typing import Any

from django.views.debug import SafeExceptionReporterFilter

# scheme://user:password@host, or scheme://token@host: any userinfo is a credential.
URL_WITH_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^/?#\s]*@", re.IGNORECASE)


class SettingsHidingReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, plus connection settings by name (URL, BROKER, DSN,
    LOCATION, HOSTS: a password may sit in a query string too) and, whatever the
    name, any value that is a URL carrying credentials."""

    hidden_settings = re.compile(
        SafeExceptionReporterFilter.hidden_settings.pattern + "|URL|BROKER|DSN|LOCATION|HOSTS",
        flags=re.IGNORECASE,
    )

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        if isinstance(value, str) and URL_WITH_CREDENTIALS.search(value):
            return self.cleansed_substitute
        return super().cleanse_setting(key, value)
