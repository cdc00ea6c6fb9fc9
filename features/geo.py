"""Country reference data: ISO 3166-1 alpha-2 codes and each country's default time zone.

Pure tables plus small vectorised helpers. The country list and the single-zone countries'
zones come from the IANA tz database (tzdata's ``iso3166.tab`` and ``zone.tab``), so every
zone named here is in ``zoneinfo.available_timezones()``; the tests check both against tzdata.
"""

from __future__ import annotations

import functools
import zoneinfo

import pandas as pd

from features.distinct import by_distinct

# ISO 3166-1 alpha-2: the 249 officially assigned codes (tzdata's iso3166.tab), plus "XK"
# (Kosovo), which is user-assigned, not official, but card networks and processors (Stripe
# included) report it as a card country; rejecting it would throw away real invoices.
_ISO_3166_ALPHA2 = """
    AD AE AF AG AI AL AM AO AQ AR AS AT
    AU AW AX AZ BA BB BD BE BF BG BH BI
    BJ BL BM BN BO BQ BR BS BT BV BW BY
    BZ CA CC CD CF CG CH CI CK CL CM CN
    CO CR CU CV CW CX CY CZ DE DJ DK DM
    DO DZ EC EE EG EH ER ES ET FI FJ FK
    FM FO FR GA GB GD GE GF GG GH GI GL
    GM GN GP GQ GR GS GT GU GW GY HK HM
    HN HR HT HU ID IE IL IM IN IO IQ IR
    IS IT JE JM JO JP KE KG KH KI KM KN
    KP KR KW KY KZ LA LB LC LI LK LR LS
    LT LU LV LY MA MC MD ME MF MG MH MK
    ML MM MN MO MP MQ MR MS MT MU MV MW
    MX MY MZ NA NC NE NF NG NI NL NO NP
    NR NU NZ OM PA PE PF PG PH PK PL PM
    PN PR PS PT PW PY QA RE RO RS RU RW
    SA SB SC SD SE SG SH SI SJ SK SL SM
    SN SO SR SS ST SV SX SY SZ TC TD TF
    TG TH TJ TK TL TM TN TO TR TT TV TW
    TZ UA UG UM US UY UZ VA VC VE VG VI
    VN VU WF WS YE YT ZA ZM ZW
    XK
"""
COUNTRIES: frozenset[str] = frozenset(_ISO_3166_ALPHA2.split())

# Country -> the IANA zone most of its customers live in, so hour-of-day and day-of-week
# features are right for most of them when the customer's own zone is unknown.
# Single-zone countries: their zone.tab zone. Multi-zone countries: the most populous zone,
# except the US, where America/Chicago is the population-weighted median zone (Eastern ~47%,
# Central ~29%, Mountain ~7%, Pacific ~17% of people): it minimises the mean error in hours
# (~0.9 h, against ~0.95 h for America/New_York) and is at most 2 h off in the lower 48.
# BV and HM (uninhabited) have no zone and fall back to UTC.
DEFAULT_TIMEZONE: dict[str, str] = {
    "AD": "Europe/Andorra",
    "AE": "Asia/Dubai",
    "AF": "Asia/Kabul",
    "AG": "America/Antigua",
    "AI": "America/Anguilla",
    "AL": "Europe/Tirane",
    "AM": "Asia/Yerevan",
    "AO": "Africa/Luanda",
    "AQ": "Antarctica/McMurdo",  # Antarctica: most populous of 10 zones
    "AR": "America/Argentina/Buenos_Aires",  # Argentina: most populous of 12 zones
    "AS": "Pacific/Pago_Pago",
    "AT": "Europe/Vienna",
    "AU": "Australia/Sydney",  # Australia: most populous of 12 zones
    "AW": "America/Aruba",
    "AX": "Europe/Mariehamn",
    "AZ": "Asia/Baku",
    "BA": "Europe/Sarajevo",
    "BB": "America/Barbados",
    "BD": "Asia/Dhaka",
    "BE": "Europe/Brussels",
    "BF": "Africa/Ouagadougou",
    "BG": "Europe/Sofia",
    "BH": "Asia/Bahrain",
    "BI": "Africa/Bujumbura",
    "BJ": "Africa/Porto-Novo",
    "BL": "America/St_Barthelemy",
    "BM": "Atlantic/Bermuda",
    "BN": "Asia/Brunei",
    "BO": "America/La_Paz",
    "BQ": "America/Kralendijk",
    "BR": "America/Sao_Paulo",  # Brazil: most populous of 16 zones
    "BS": "America/Nassau",
    "BT": "Asia/Thimphu",
    "BW": "Africa/Gaborone",
    "BY": "Europe/Minsk",
    "BZ": "America/Belize",
    "CA": "America/Toronto",  # Canada: most populous of 23 zones
    "CC": "Indian/Cocos",
    "CD": "Africa/Kinshasa",  # Congo (Dem. Rep.): most populous of 2 zones
    "CF": "Africa/Bangui",
    "CG": "Africa/Brazzaville",
    "CH": "Europe/Zurich",
    "CI": "Africa/Abidjan",
    "CK": "Pacific/Rarotonga",
    "CL": "America/Santiago",  # Chile: most populous of 4 zones
    "CM": "Africa/Douala",
    "CN": "Asia/Shanghai",  # China: most populous of 2 zones
    "CO": "America/Bogota",
    "CR": "America/Costa_Rica",
    "CU": "America/Havana",
    "CV": "Atlantic/Cape_Verde",
    "CW": "America/Curacao",
    "CX": "Indian/Christmas",
    "CY": "Asia/Nicosia",  # Cyprus: most populous of 2 zones
    "CZ": "Europe/Prague",
    "DE": "Europe/Berlin",  # Germany: most populous of 2 zones
    "DJ": "Africa/Djibouti",
    "DK": "Europe/Copenhagen",
    "DM": "America/Dominica",
    "DO": "America/Santo_Domingo",
    "DZ": "Africa/Algiers",
    "EC": "America/Guayaquil",  # Ecuador: most populous of 2 zones
    "EE": "Europe/Tallinn",
    "EG": "Africa/Cairo",
    "EH": "Africa/El_Aaiun",
    "ER": "Africa/Asmara",
    "ES": "Europe/Madrid",  # Spain: most populous of 3 zones
    "ET": "Africa/Addis_Ababa",
    "FI": "Europe/Helsinki",
    "FJ": "Pacific/Fiji",
    "FK": "Atlantic/Stanley",
    "FM": "Pacific/Chuuk",  # Micronesia: most populous of 3 zones
    "FO": "Atlantic/Faroe",
    "FR": "Europe/Paris",
    "GA": "Africa/Libreville",
    "GB": "Europe/London",
    "GD": "America/Grenada",
    "GE": "Asia/Tbilisi",
    "GF": "America/Cayenne",
    "GG": "Europe/Guernsey",
    "GH": "Africa/Accra",
    "GI": "Europe/Gibraltar",
    "GL": "America/Nuuk",  # Greenland: most populous of 4 zones
    "GM": "Africa/Banjul",
    "GN": "Africa/Conakry",
    "GP": "America/Guadeloupe",
    "GQ": "Africa/Malabo",
    "GR": "Europe/Athens",
    "GS": "Atlantic/South_Georgia",
    "GT": "America/Guatemala",
    "GU": "Pacific/Guam",
    "GW": "Africa/Bissau",
    "GY": "America/Guyana",
    "HK": "Asia/Hong_Kong",
    "HN": "America/Tegucigalpa",
    "HR": "Europe/Zagreb",
    "HT": "America/Port-au-Prince",
    "HU": "Europe/Budapest",
    "ID": "Asia/Jakarta",  # Indonesia: most populous of 4 zones
    "IE": "Europe/Dublin",
    "IL": "Asia/Jerusalem",
    "IM": "Europe/Isle_of_Man",
    "IN": "Asia/Kolkata",
    "IO": "Indian/Chagos",
    "IQ": "Asia/Baghdad",
    "IR": "Asia/Tehran",
    "IS": "Atlantic/Reykjavik",
    "IT": "Europe/Rome",
    "JE": "Europe/Jersey",
    "JM": "America/Jamaica",
    "JO": "Asia/Amman",
    "JP": "Asia/Tokyo",
    "KE": "Africa/Nairobi",
    "KG": "Asia/Bishkek",
    "KH": "Asia/Phnom_Penh",
    "KI": "Pacific/Tarawa",  # Kiribati: most populous of 3 zones
    "KM": "Indian/Comoro",
    "KN": "America/St_Kitts",
    "KP": "Asia/Pyongyang",
    "KR": "Asia/Seoul",
    "KW": "Asia/Kuwait",
    "KY": "America/Cayman",
    "KZ": "Asia/Almaty",  # Kazakhstan: most populous of 7 zones
    "LA": "Asia/Vientiane",
    "LB": "Asia/Beirut",
    "LC": "America/St_Lucia",
    "LI": "Europe/Vaduz",
    "LK": "Asia/Colombo",
    "LR": "Africa/Monrovia",
    "LS": "Africa/Maseru",
    "LT": "Europe/Vilnius",
    "LU": "Europe/Luxembourg",
    "LV": "Europe/Riga",
    "LY": "Africa/Tripoli",
    "MA": "Africa/Casablanca",
    "MC": "Europe/Monaco",
    "MD": "Europe/Chisinau",
    "ME": "Europe/Podgorica",
    "MF": "America/Marigot",
    "MG": "Indian/Antananarivo",
    "MH": "Pacific/Majuro",  # Marshall Islands: most populous of 2 zones
    "MK": "Europe/Skopje",
    "ML": "Africa/Bamako",
    "MM": "Asia/Yangon",
    "MN": "Asia/Ulaanbaatar",  # Mongolia: most populous of 2 zones
    "MO": "Asia/Macau",
    "MP": "Pacific/Saipan",
    "MQ": "America/Martinique",
    "MR": "Africa/Nouakchott",
    "MS": "America/Montserrat",
    "MT": "Europe/Malta",
    "MU": "Indian/Mauritius",
    "MV": "Indian/Maldives",
    "MW": "Africa/Blantyre",
    "MX": "America/Mexico_City",  # Mexico: most populous of 12 zones
    "MY": "Asia/Kuala_Lumpur",  # Malaysia: most populous of 2 zones
    "MZ": "Africa/Maputo",
    "NA": "Africa/Windhoek",
    "NC": "Pacific/Noumea",
    "NE": "Africa/Niamey",
    "NF": "Pacific/Norfolk",
    "NG": "Africa/Lagos",
    "NI": "America/Managua",
    "NL": "Europe/Amsterdam",
    "NO": "Europe/Oslo",
    "NP": "Asia/Kathmandu",
    "NR": "Pacific/Nauru",
    "NU": "Pacific/Niue",
    "NZ": "Pacific/Auckland",  # New Zealand: most populous of 2 zones
    "OM": "Asia/Muscat",
    "PA": "America/Panama",
    "PE": "America/Lima",
    "PF": "Pacific/Tahiti",  # French Polynesia: most populous of 3 zones
    "PG": "Pacific/Port_Moresby",  # Papua New Guinea: most populous of 2 zones
    "PH": "Asia/Manila",
    "PK": "Asia/Karachi",
    "PL": "Europe/Warsaw",
    "PM": "America/Miquelon",
    "PN": "Pacific/Pitcairn",
    "PR": "America/Puerto_Rico",
    "PS": "Asia/Hebron",  # Palestine: most populous of 2 zones
    "PT": "Europe/Lisbon",  # Portugal: most populous of 3 zones
    "PW": "Pacific/Palau",
    "PY": "America/Asuncion",
    "QA": "Asia/Qatar",
    "RE": "Indian/Reunion",
    "RO": "Europe/Bucharest",
    "RS": "Europe/Belgrade",
    "RU": "Europe/Moscow",  # Russia: most populous of 26 zones
    "RW": "Africa/Kigali",
    "SA": "Asia/Riyadh",
    "SB": "Pacific/Guadalcanal",
    "SC": "Indian/Mahe",
    "SD": "Africa/Khartoum",
    "SE": "Europe/Stockholm",
    "SG": "Asia/Singapore",
    "SH": "Atlantic/St_Helena",
    "SI": "Europe/Ljubljana",
    "SJ": "Arctic/Longyearbyen",
    "SK": "Europe/Bratislava",
    "SL": "Africa/Freetown",
    "SM": "Europe/San_Marino",
    "SN": "Africa/Dakar",
    "SO": "Africa/Mogadishu",
    "SR": "America/Paramaribo",
    "SS": "Africa/Juba",
    "ST": "Africa/Sao_Tome",
    "SV": "America/El_Salvador",
    "SX": "America/Lower_Princes",
    "SY": "Asia/Damascus",
    "SZ": "Africa/Mbabane",
    "TC": "America/Grand_Turk",
    "TD": "Africa/Ndjamena",
    "TF": "Indian/Kerguelen",
    "TG": "Africa/Lome",
    "TH": "Asia/Bangkok",
    "TJ": "Asia/Dushanbe",
    "TK": "Pacific/Fakaofo",
    "TL": "Asia/Dili",
    "TM": "Asia/Ashgabat",
    "TN": "Africa/Tunis",
    "TO": "Pacific/Tongatapu",
    "TR": "Europe/Istanbul",
    "TT": "America/Port_of_Spain",
    "TV": "Pacific/Funafuti",
    "TW": "Asia/Taipei",
    "TZ": "Africa/Dar_es_Salaam",
    "UA": "Europe/Kyiv",  # Ukraine: most populous of 2 zones
    "UG": "Africa/Kampala",
    "UM": "Pacific/Wake",  # US minor outlying islands: most populous of 2 zones
    "US": "America/Chicago",  # United States: population-weighted median zone, see above
    "UY": "America/Montevideo",
    "UZ": "Asia/Tashkent",  # Uzbekistan: most populous of 2 zones
    "VA": "Europe/Vatican",
    "VC": "America/St_Vincent",
    "VE": "America/Caracas",
    "VG": "America/Tortola",
    "VI": "America/St_Thomas",
    "VN": "Asia/Ho_Chi_Minh",
    "VU": "Pacific/Efate",
    "WF": "Pacific/Wallis",
    "WS": "Pacific/Apia",
    "YE": "Asia/Aden",
    "YT": "Indian/Mayotte",
    "ZA": "Africa/Johannesburg",
    "ZM": "Africa/Lusaka",
    "ZW": "Africa/Harare",
    "XK": "Europe/Belgrade",  # Kosovo (user-assigned code, see COUNTRIES)
}

FALLBACK_TIMEZONE = "UTC"


@functools.cache
def timezone_names() -> frozenset[str]:
    """Every IANA zone name tzdata knows; cached because scanning tzdata touches the disk."""
    return frozenset(zoneinfo.available_timezones())


@functools.cache
def timezone_by_lower_name() -> dict[str, str]:
    """Lower-cased zone name -> canonical spelling, to accept 'america/new_york' as given by hand."""
    return {name.lower(): name for name in timezone_names()}


def is_valid_timezone(name: str) -> bool:
    """True when ``name`` is an IANA zone name exactly as tzdata spells it."""
    return name in timezone_names()


def resolve_timezones(tz: pd.Series, country: pd.Series) -> pd.Series:
    """The given zone when present, else the country's default zone, else "UTC" (vectorised)."""
    given = tz.astype("str").str.strip()
    given = given.where(given != "")
    from_country = by_distinct(
        country.astype("str"), lambda code: code.str.strip().str.upper().map(DEFAULT_TIMEZONE).astype("str")
    )
    return given.fillna(from_country).fillna(FALLBACK_TIMEZONE).astype("str")
