"""Belgian reference data for the sandbox: places, streets, trades, parties, VAT number forms.

Names come from Faker's nl_BE and fr_BE person tables; places and streets are real Belgian ones.
"""

from __future__ import annotations

import random
import re
import unicodedata

from faker.providers.address.nl_BE import Provider as DutchAddress
from faker.providers.person.fr_BE import Provider as FrenchPerson
from faker.providers.person.nl_BE import Provider as DutchPerson

# Faker's Belgian postcodes are random digits unrelated to the city, so places are listed here:
# (postal code, Dutch name, French name, language of most customers there).
PLACES = (
    ("1000", "Brussel", "Bruxelles", "fr"),
    ("1030", "Schaarbeek", "Schaerbeek", "fr"),
    ("1050", "Elsene", "Ixelles", "fr"),
    ("1060", "Sint-Gillis", "Saint-Gilles", "fr"),
    ("1070", "Anderlecht", "Anderlecht", "fr"),
    ("1080", "Sint-Jans-Molenbeek", "Molenbeek-Saint-Jean", "fr"),
    ("1180", "Ukkel", "Uccle", "fr"),
    ("1200", "Sint-Lambrechts-Woluwe", "Woluwe-Saint-Lambert", "fr"),
    ("1300", "Waver", "Wavre", "fr"),
    ("1340", "Ottignies-Louvain-la-Neuve", "Ottignies-Louvain-la-Neuve", "fr"),
    ("1400", "Nijvel", "Nivelles", "fr"),
    ("1420", "Eigenbrakel", "Braine-l'Alleud", "fr"),
    ("1500", "Halle", "Hal", "nl"),
    ("1700", "Dilbeek", "Dilbeek", "nl"),
    ("1800", "Vilvoorde", "Vilvorde", "nl"),
    ("1930", "Zaventem", "Saventhem", "nl"),
    ("2000", "Antwerpen", "Anvers", "nl"),
    ("2018", "Antwerpen", "Anvers", "nl"),
    ("2100", "Deurne", "Deurne", "nl"),
    ("2140", "Borgerhout", "Borgerhout", "nl"),
    ("2300", "Turnhout", "Turnhout", "nl"),
    ("2400", "Mol", "Mol", "nl"),
    ("2500", "Lier", "Lierre", "nl"),
    ("2800", "Mechelen", "Malines", "nl"),
    ("2900", "Schoten", "Schoten", "nl"),
    ("3000", "Leuven", "Louvain", "nl"),
    ("3200", "Aarschot", "Aarschot", "nl"),
    ("3290", "Diest", "Diest", "nl"),
    ("3500", "Hasselt", "Hasselt", "nl"),
    ("3600", "Genk", "Genk", "nl"),
    ("3700", "Tongeren", "Tongres", "nl"),
    ("3800", "Sint-Truiden", "Saint-Trond", "nl"),
    ("4000", "Luik", "Liège", "fr"),
    ("4020", "Luik", "Liège", "fr"),
    ("4100", "Seraing", "Seraing", "fr"),
    ("4500", "Hoei", "Huy", "fr"),
    ("4800", "Verviers", "Verviers", "fr"),
    ("5000", "Namen", "Namur", "fr"),
    ("5100", "Jambes", "Jambes", "fr"),
    ("5500", "Dinant", "Dinant", "fr"),
    ("6000", "Charleroi", "Charleroi", "fr"),
    ("6001", "Marcinelle", "Marcinelle", "fr"),
    ("6200", "Châtelet", "Châtelet", "fr"),
    ("6700", "Aarlen", "Arlon", "fr"),
    ("6900", "Marche-en-Famenne", "Marche-en-Famenne", "fr"),
    ("7000", "Bergen", "Mons", "fr"),
    ("7100", "La Louvière", "La Louvière", "fr"),
    ("7500", "Doornik", "Tournai", "fr"),
    ("7700", "Moeskroen", "Mouscron", "fr"),
    ("8000", "Brugge", "Bruges", "nl"),
    ("8400", "Oostende", "Ostende", "nl"),
    ("8500", "Kortrijk", "Courtrai", "nl"),
    ("8800", "Roeselare", "Roulers", "nl"),
    ("8900", "Ieper", "Ypres", "nl"),
    ("9000", "Gent", "Gand", "nl"),
    ("9100", "Sint-Niklaas", "Saint-Nicolas", "nl"),
    ("9200", "Dendermonde", "Termonde", "nl"),
    ("9300", "Aalst", "Alost", "nl"),
    ("9400", "Ninove", "Ninove", "nl"),
    ("9700", "Oudenaarde", "Audenarde", "nl"),
)

DUTCH_STREETS = (
    "Kerkstraat",
    "Stationsstraat",
    "Dorpsstraat",
    "Molenstraat",
    "Nieuwstraat",
    "Schoolstraat",
    "Kapelstraat",
    "Veldstraat",
    "Hoogstraat",
    "Beekstraat",
    "Industrielaan",
    "Lindenlaan",
    "Brugsesteenweg",
    "Gentsesteenweg",
    "Kortrijksesteenweg",
    "Ambachtsweg",
    "Grote Markt",
    "Meersstraat",
    "Boomgaardstraat",
    "Kasteeldreef",
)
FRENCH_STREETS = (
    "Rue de la Station",
    "Rue de l'Église",
    "Chaussée de Bruxelles",
    "Rue du Moulin",
    "Avenue des Tilleuls",
    "Rue Haute",
    "Place Communale",
    "Rue de Namur",
    "Chaussée de Louvain",
    "Rue des Champs",
    "Rue du Centre",
    "Avenue Louise",
    "Rue de la Gare",
    "Rue Royale",
    "Chaussée de Mons",
    "Rue des Écoles",
    "Rue du Château",
    "Avenue de la Libération",
)

TRADES = {
    "nl": (
        "Garage",
        "Carrosserie",
        "Autobedrijf",
        "Bouwbedrijf",
        "Transport",
        "Schrijnwerkerij",
        "Bakkerij",
        "Loodgieterij",
        "Elektro",
        "Taxi",
        "Koeriersdienst",
        "Tuinaanleg",
        "Dakwerken",
        "Schilderwerken",
        "Interieur",
    ),
    "fr": (
        "Garage",
        "Carrosserie",
        "Transports",
        "Boulangerie",
        "Menuiserie",
        "Taxis",
        "Électricité",
        "Toitures",
        "Peinture",
        "Boucherie",
        "Pharmacie",
        "Jardins",
        "Construction",
    ),
}

# Legal forms as Driver2 writes them today, with the pre-2019 form PlanManager may still hold.
LEGAL_FORMS = {
    "nl": (
        ("BV", "BVBA"),
        ("BV", "BVBA"),
        ("BV", "BVBA"),
        ("NV", "NV"),
        ("CV", "CVBA"),
        ("VOF", "VOF"),
    ),
    "fr": (
        ("SRL", "SPRL"),
        ("SRL", "SPRL"),
        ("SRL", "SPRL"),
        ("SA", "SA"),
        ("SC", "SCRL"),
        ("SNC", "SNC"),
    ),
}
# Every legal form the contract sets aside when comparing names.
LEGAL_FORM_WORDS = frozenset("srl sprl bv bvba nv sa cv sc scrl cvba vzw asbl vof snc".split())

# Insurers and lessors: parties of many dossiers, and sometimes the invoiced customer.
INSURERS = (
    "AG Insurance SA",
    "Ethias SA",
    "AXA Belgium SA",
    "P&V Assurances SC",
    "Baloise Belgium NV",
    "KBC Verzekeringen NV",
    "Belfius Insurance SA",
    "Allianz Benelux SA",
    "Federale Verzekering CV",
)
LESSORS = (
    "Arval Belgium SA",
    "Ayvens Belgium NV",
    "Athlon Belgium NV",
    "Alphabet Belgium NV",
    "Leasys Belgium SA",
)

LINE_TEXTS = {
    "nl": {
        "part": (
            "Voorbumper",
            "Koplamp links",
            "Spiegelglas rechts",
            "Motorkap",
            "Achterlicht",
            "Voorruit",
            "Wielkast links",
            "Bevestigingsclips (set)",
            "Grille",
            "Spatbord",
        ),
        "labour": (
            "Uurloon carrosserie",
            "Demontage/montage",
            "Richtwerk",
            "Uurloon mechaniek",
            "Uitdeuken zonder lakken",
        ),
        "paint": ("Lakwerk voorbumper", "Lakmateriaal", "Lakwerk spatbord", "Blanke lak"),
        "sublet": ("Ruitvervanging door derde", "Uitlijning", "Sleepdienst", "Vervangwagen"),
        "comment": (
            "Schadedossier volgens expertise",
            "Voertuig klaar voor afhaling",
            "Vrijstelling ten laste van de klant",
            "Herstelling volgens bestek",
        ),
        "discount": "Korting",
    },
    "fr": {
        "part": (
            "Pare-chocs avant",
            "Phare gauche",
            "Rétroviseur droit",
            "Capot",
            "Feu arrière",
            "Pare-brise",
            "Passage de roue",
            "Agrafes (lot)",
            "Calandre",
            "Aile avant",
        ),
        "labour": (
            "Main d'œuvre tôlerie",
            "Démontage / remontage",
            "Redressage",
            "Main d'œuvre mécanique",
            "Débosselage sans peinture",
        ),
        "paint": ("Peinture pare-chocs", "Ingrédients peinture", "Peinture aile", "Vernis"),
        "sublet": (
            "Remplacement vitrage (sous-traitance)",
            "Géométrie",
            "Remorquage",
            "Véhicule de remplacement",
        ),
        "comment": (
            "Sinistre selon expertise",
            "Véhicule prêt à l'enlèvement",
            "Franchise à charge du client",
            "Réparation selon devis",
        ),
        "discount": "Remise",
    },
}


def list_first_names(language: str) -> tuple[list[str], list[str]]:
    """Return the (male, female) first names of Faker's table for the language."""
    person = DutchPerson if language == "nl" else FrenchPerson
    return list(person.first_names_male), list(person.first_names_female)


def list_last_names(language: str) -> list[str]:
    """Return the last names of Faker's table for the language."""
    return list((DutchPerson if language == "nl" else FrenchPerson).last_names)


STREET_SUFFIXES = DutchAddress.street_suffixes


def strip_accents(text: str) -> str:
    """Return the text without diacritics: 'Hélène Lefèvre' -> 'Helene Lefevre'."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def make_name_key(name: str, postal_code: str | None) -> str:
    """Return a key that two names share whenever any reading of the contract's rule c could
    call them equal: letters only, sorted, legal forms dropped. Coarser than the rule on purpose,
    so that keeping keys unique keeps every pair of distinct customers apart."""
    # Dropping what ASCII cannot hold only makes the key coarser, which is safe here.
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", plain.casefold())
    letters = "".join(word for word in words if word not in LEGAL_FORM_WORDS)
    return f"{''.join(sorted(letters))}|{postal_code or ''}"


def compute_check_digits(body: int) -> int:
    """Return the two check digits of an enterprise number whose first eight digits are body."""
    return 97 - body % 97


def make_enterprise_number(body: int) -> str:
    """Return the ten digits of the enterprise number with the given eight-digit body."""
    return f"{body:08d}{compute_check_digits(body):02d}"


def type_vat_number(digits: str, style: int) -> str:
    """Return the ten-digit enterprise number as a person might type it, in one of several
    styles; styles that drop the leading zero fall back to a full form when it is not zero."""
    grouped = f"{digits[:4]}.{digits[4:7]}.{digits[7:]}"
    short = digits[1:] if digits[0] == "0" else None
    styles = (
        f"BE {grouped}",
        f"BE{digits}",
        f"be{short}" if short else f"be{digits}",
        f"{digits[:4]}-{digits[4:7]}-{digits[7:]}",
        short or f"BE {digits}",
        grouped,
        f"BE {digits[:4]} {digits[4:7]} {digits[7:]}",
        f"be {grouped}",
    )
    return styles[style % len(styles)]


VAT_STYLE_COUNT = 8


def draw_plate(rng: random.Random) -> str:
    """Return a Belgian number plate in the current 1-ABC-234 form."""
    letters = "".join(rng.choices("ABCDEFGHJKLMNPRSTUVWXYZ", k=3))
    return f"{rng.randint(1, 2)}-{letters}-{rng.randint(0, 999):03d}"


def draw_vin(rng: random.Random) -> str:
    """Return a 17-character VIN of a European make (no I, O or Q, as VINs never hold them)."""
    maker = rng.choice(("WVW", "WBA", "WDD", "VF1", "VF3", "TMB", "YV1", "WAU", "ZFA", "VSS"))
    alphabet = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
    return maker + "".join(rng.choices(alphabet, k=14))
