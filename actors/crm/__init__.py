"""The CRM lookup, split three ways: `fetcher` is the actor calls talk to, `http_client`
asks the remote CRM over HTTP (urllib3 + tenacity) and validates its answer, `guards`
holds what keeps a slow or dead CRM from holding a caller up (deadlines, breaker,
answer cache)."""

from actors.crm.fetcher import CrmFetcher

__all__ = ["CrmFetcher"]
