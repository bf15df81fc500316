"""An award as an Open Badges 3.0 credential (a W3C Verifiable Credential, JSON-LD).

The credential is not signed: it carries no ``proof``. Its ``id`` is the stable URL that
serves it, on the issuer's own site, so a verifier checks it by fetching that URL from
the issuer (hosted verification). The README says so.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote

from streams.badges import Badge, criteria

CONTEXT: Final = (
    "https://www.w3.org/ns/credentials/v2",
    "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json",
)


def achievement_url(base: str, community: str, badge: str, tier: str | None) -> str:
    url = f"{base}/c/{community}/badges/{badge}"
    return f"{url}#{tier}" if tier else url


def image_path(community: str, badge: str, tier: str | None) -> str:
    """The site path of a badge tier's image (ids are validated URL-safe; quoted anyway)."""
    return f"/c/{quote(community)}/badges/{quote(badge)}{'.' + quote(tier) if tier else ''}.svg"


def image_url(base: str, community: str, badge: str, tier: str | None) -> str:
    return base + image_path(community, badge, tier)


def credential_url(base: str, community: str, identity: str) -> str:
    return f"{base}/c/{community}/awards/{identity}"


def profile_url(base: str, community: str, member_id: str) -> str:
    return f"{base}/c/{community}/members/{quote(member_id, safe='')}"


def open_badge(
    base: str,
    issuer: dict[str, Any],
    award: dict[str, Any],
    badge: Badge,
) -> dict[str, Any]:
    """The OpenBadgeCredential of ``award`` (a :meth:`Reader.award` record) of
    ``badge``, issued by ``issuer`` (``id``, ``name`` and optionally ``url``)."""
    community, tier = issuer["community"], award["tier"]
    title = badge.name + (f" ({tier})" if tier else "")
    profile: dict[str, Any] = {"id": issuer["id"], "type": ["Profile"], "name": issuer["name"]}
    if issuer.get("url"):
        profile["url"] = issuer["url"]
    return {
        "@context": list(CONTEXT),
        "id": credential_url(base, community, award["award_id"]),
        "type": ["VerifiableCredential", "OpenBadgeCredential"],
        "name": title,
        "issuer": profile,
        "validFrom": award["awarded_at"],
        "credentialSubject": {
            "type": ["AchievementSubject"],
            "identifier": [
                {
                    "type": "IdentityObject",
                    "identityType": "systemId",
                    "hashed": False,
                    "identityHash": award["member_id"],
                }
            ],
            "achievement": {
                "id": achievement_url(base, community, badge.id, tier),
                "type": ["Achievement"],
                "name": title,
                "description": badge.description,
                "criteria": {"narrative": " ".join(criteria(badge))},
                "image": {
                    "id": image_url(base, community, badge.id, tier),
                    "type": "Image",
                },
            },
        },
        "evidence": [
            {
                "type": ["Evidence"],
                "name": "Event that completed the badge",
                "description": f"event_id {event}",
            }
            for event in award["evidence"]
        ],
    }
