"""The hostile-file set: the traps real lead exports set, each file written with the outcome it must have.

`python -m import_pipeline_tests.hostile_files DIR` writes the files, to open them by hand.
"""

import csv
import gzip
import io
import random
import sys
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import xlsxwriter

HEADERS = ["Company", "First Name", "Last Name", "Email", "Phone", "City", "Notes"]
# Accents, a delimiter, doubled quotes and a bad email; lines 2-6 as a person counts them.
ROWS = [
    ["Société Générale", "Zoé", "Müller", "zoe@sg.fr", "0612345678", "Paris", "Crème brûlée fan"],
    ["Café Crème, SARL", "José", 'O"Brien', "jose@cafe.fr", "", "Nîmes", 'said "oui"'],
    ["Ärger GmbH", "Åsa", "Ng", "not-an-email", "", "Zürich", ""],
    ["Naïve Inc", "Ana", "Li", "ana@naive.com", "+1 415 555 0100", "Québec", "façade"],
    ["Hôtel Dieu", "Noël", "Lefèvre", "noel@hotel-dieu.fr", "01 23 45 67 89", "Orléans", "déjà vu"],
]
ROW_VALUES = {
    2: {"company_name": "Société Générale", "first_name": "Zoé", "phone": "0612345678", "notes": "Crème brûlée fan"},
    3: {"company_name": "Café Crème, SARL", "last_name": 'O"Brien', "phone": None, "notes": 'said "oui"'},
    6: {"company_name": "Hôtel Dieu", "city": "Orléans"},
}
BAD_EMAIL = {4: "email is not valid: An email address must have an @-sign"}
# Windows-1252 has the euro sign and curly quotes, Latin-1 does not: a wrong guess shows.
CP1252_ROWS = [*ROWS, ["L’Atelier €uro", "Hélène", "Dupré", "helene@atelier.fr", "", "Besançon", "“très” bien"]]


@dataclass(frozen=True)
class Hostile:
    """One file and what importing it must give: counts and rejected lines, or the file-level error."""

    name: str
    content: bytes
    rows_read: int = 0
    rejected: dict[int, str] = field(default_factory=dict)  # line -> a problem it must list
    values: dict[int, dict[str, str | None]] = field(default_factory=dict)  # line -> lead fields
    details: dict[str, object] = field(default_factory=dict)  # what parse must have detected
    config: dict[str, object] = field(default_factory=dict)  # parse run config
    error: str = ""  # the file-level error, after "<file name>: "
    warnings: tuple[str, ...] = ()  # what the parse must warn of, exactly


def table(rows: list[list[str]], delimiter: str = ",", eol: str = "\n", headers: list[str] = HEADERS) -> str:
    """CSV text as a spreadsheet program writes it: quotes only where needed."""
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator=eol).writerows([headers, *rows])
    return out.getvalue()


def workbook(sheets: dict[str, list[list[object]]]) -> bytes:
    """An XLSX with one sheet per entry; a cell may be a value, a date or ("=formula", cached value)."""
    out = io.BytesIO()
    book = xlsxwriter.Workbook(out, {"in_memory": True})
    date_format = book.add_format({"num_format": "yyyy-mm-dd"})
    stamp_format = book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
    for name, rows in sheets.items():
        sheet = book.add_worksheet(name)
        for r, row in enumerate(rows):
            for c, cell in enumerate(row):
                if isinstance(cell, tuple):
                    sheet.write_formula(r, c, cell[0], None, cell[1])
                elif isinstance(cell, datetime):
                    sheet.write_datetime(r, c, cell, stamp_format)
                elif isinstance(cell, date):
                    sheet.write_datetime(r, c, datetime(cell.year, cell.month, cell.day), date_format)
                elif isinstance(cell, str):
                    sheet.write_string(r, c, cell)
                elif cell is not None:
                    sheet.write(r, c, cell)
    book.close()
    return out.getvalue()


def zip_bomb(declared_mb: int) -> bytes:
    """A workbook whose sheet inflates to `declared_mb` MB from a few kB."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
        archive.writestr("xl/worksheets/sheet1.xml", b" " * (declared_mb * 1024 * 1024))
    return out.getvalue()


def _parsed(name: str, content: bytes, details: dict | None = None, **kwargs) -> Hostile:
    """A file carrying ROWS, which must read exactly as ROWS."""
    return Hostile(name, content, rows_read=5, rejected=BAD_EMAIL, values=ROW_VALUES, details=details or {}, **kwargs)


def _dialects() -> list[Hostile]:
    text = table(ROWS)
    return [
        _parsed("comma_lf.csv", text.encode(), {"delimiter": ",", "line_ending": "LF", "encoding": "utf-8"}),
        _parsed("semicolon_crlf.csv", table(ROWS, ";", "\r\n").encode(), {"delimiter": ";", "line_ending": "CRLF"}),
        _parsed("tab.tsv", table(ROWS, "\t").encode(), {"delimiter": "\t"}),
        _parsed("pipe.csv", table(ROWS, "|").encode(), {"delimiter": "|"}),
        _parsed("old_mac_cr.csv", table(ROWS, eol="\r").encode(), {"line_ending": "CR"}),
        _parsed("bom.csv", b"\xef\xbb\xbf" + text.encode(), {"encoding": "utf-8-sig"}),
        # Excel's "Unicode text": UTF-16 LE with a BOM, tab-separated, CRLF.
        _parsed(
            "excel_unicode.txt", table(ROWS, "\t", "\r\n").encode("utf-16"), {"encoding": "utf-16", "delimiter": "\t"}
        ),
        _parsed("utf16_be.csv", b"\xfe\xff" + text.encode("utf-16-be"), {"encoding": "utf-16"}),
        # A report title and blank lines above the header: the header is line 4, the bad email line 7.
        Hostile(
            "titled_report.csv",
            ("Leads report,,\nExported 2026-11-24\n\n" + text).encode(),
            rows_read=5,
            rejected={7: "email is not valid: An email address must have an @-sign"},
            values={5: ROW_VALUES[2], 9: ROW_VALUES[6]},
            details={"header_line": 4},
        ),
        _parsed("leads.csv.gz", gzip.compress(text.encode()), {"format": "csv"}),
        Hostile(
            "windows_1252.csv",
            table(CP1252_ROWS, ";", "\r\n").encode("cp1252"),
            rows_read=6,
            rejected=BAD_EMAIL,
            values=ROW_VALUES | {7: {"company_name": "L’Atelier €uro", "notes": "“très” bien"}},
            details={"encoding": "cp1252"},
        ),
        # Latin-1 text reads the same as Windows-1252, the encoding Excel writes it in.
        _parsed("latin_1.csv", text.encode("latin-1"), {"encoding": "cp1252"}),
        _parsed(
            "latin_1_override.csv", text.encode("latin-1"), {"encoding": "iso8859-1"}, config={"encoding": "latin-1"}
        ),
        # Old DOS exports: a code page no detector can tell apart reliably, so the run config names it.
        _parsed("dos_cp850.csv", text.encode("cp850"), {"encoding": "cp850"}, config={"encoding": "cp850"}),
    ]


def _quoting() -> list[Hostile]:
    multiline = (
        "Company,Email,Notes\n"
        'Acme,ann@acme.com,"first line\nsecond line, with a comma"\n'  # lines 2-3
        'Beta,"bob@beta.com","He said ""hi""\r\nthen left"\n'  # lines 4-5
        "Gamma,not-an-email,\n"  # line 6: rejected, numbered after two multi-line records
        '"Delta ""the best""",dan@delta.com,"a\n\nb"\n'  # lines 7-9
        "Echo,eve@echo.com,\n"  # line 10
    )
    ragged = (
        "Company,Email,Phone\n"
        "Acme,ann@acme.com,01\n"
        "Beta,bob@beta.com,02,surplus\n"  # line 3: one field too many
        "Gamma,gus@gamma.com\n"  # line 4: one field too few
        + "".join(f"Filler {i},f{i}@x.com,0{i}\n" for i in range(10))
    )
    return [
        Hostile(
            "quoted_newlines.csv",
            multiline.encode(),
            rows_read=5,
            rejected={6: "email is not valid: An email address must have an @-sign"},
            values={
                2: {"company_name": "Acme", "notes": "first line\nsecond line, with a comma"},
                4: {"email": "bob@beta.com", "notes": 'He said "hi"\r\nthen left'},
                7: {"company_name": 'Delta "the best"', "notes": "a\n\nb"},
                10: {"company_name": "Echo"},
            },
        ),
        Hostile(
            "ragged.csv",
            ragged.encode(),
            rows_read=13,
            rejected={3: "row has 4 fields, the header has 3", 4: "row has 2 fields, the header has 3"},
            values={2: {"phone": "01"}, 5: {"company_name": "Filler 0", "phone": "00"}},
        ),
        Hostile(
            "leading_zeros.csv",
            b"Company,Zip,Phone,External ID\nAcme,01234,0033612345678,000042\n",
            rows_read=1,
            values={2: {"phone": "0033612345678", "external_id": "000042", "extra.Zip": "01234"}},
        ),
    ]


def _excel() -> list[Hostile]:
    leads = [HEADERS, *ROWS]
    banner = [[], [], ["Leads export - Trade show 2026"], [], [None, "generated by ScanApp"], [], *leads]
    typed = [
        ["Company", "Email", "Phone", "Created", "Last Seen", "Employees", "Customer Number"],
        [
            ('="Acme"&" Corp"', "Acme Corp"),
            "ann@acme.com",
            "0612345678",
            date(2026, 3, 1),
            datetime(2026, 3, 2, 14, 5, 9),
            42,
            "000123",
        ],
        ["Beta", ('=LOWER("BOB@BETA.COM")', "bob@beta.com"), None, date(1999, 12, 31), None, 7, "000456"],
    ]
    return [
        _parsed(
            "first_sheet.xlsx", workbook({"Leads": leads, "Other": [["Company"], ["Ignored"]]}), {"sheet": "Leads"}
        ),
        _parsed(
            "named_sheet.xlsx",
            workbook({"Summary": [["Total", 5]], "Contacts": leads}),
            {"sheet": "Contacts"},
            config={"sheet": "Contacts"},
        ),
        # Blank rows, a title and a note above the header on sheet row 7; the bad email is on sheet row 10.
        Hostile(
            "banner.xlsx",
            workbook({"Scans": banner}),
            rows_read=5,
            rejected={10: "email is not valid: An email address must have an @-sign"},
            values={8: ROW_VALUES[2], 12: ROW_VALUES[6]},
            details={"header_row": 7},
        ),
        Hostile(
            "formulas_dates.xlsx",
            workbook({"Sheet1": typed}),
            rows_read=2,
            values={
                2: {
                    "company_name": "Acme Corp",
                    "phone": "0612345678",
                    "extra.Created": "2026-03-01",
                    "extra.Last Seen": "2026-03-02T14:05:09",
                    "extra.Employees": "42",
                    "extra.Customer Number": "000123",
                },
                3: {"email": "bob@beta.com", "extra.Created": "1999-12-31", "extra.Last Seen": None},
            },
        ),
        # A workbook renamed by a user or a vendor: content decides, not the extension.
        _parsed("really_a_workbook.csv", workbook({"Leads": leads}), {"format": "xlsx"}),
    ]


def _mappings() -> list[Hostile]:
    french = ["Société", "Prénom", "Nom", "E-mail", "Téléphone", "Ville", "Pays"]
    datablist = ["Account Name", "First Name", "Last Name", "Email 1", "Phone 1", "Record ID", "Person Linkedin Url"]
    sales_navigator = [
        "First Name",
        "Last Name",
        "Title",
        "Company",
        "Company Domain",
        "Location",
        "Profile URL",
        "Email",
    ]
    hubspot = ["Record ID", "First Name", "Company Name", "Email", "Phone Number", "Website URL", "Country/Region"]
    salesforce = ["Lead ID", "Account Name", "Last Name", "Email", "Mobile", "Description", "Lead Owner"]
    return [
        Hostile(
            "datablist_fr.csv",
            table(
                [["Raison Inc", "Zoé", "Roux", "zoe@raison.fr", "0612345678", "Lyon", "France"]], ";", headers=french
            ).encode("cp1252"),
            rows_read=1,
            values={
                2: {
                    "company_name": "Raison Inc",
                    "first_name": "Zoé",
                    "last_name": "Roux",
                    "email": "zoe@raison.fr",
                    "phone": "0612345678",
                    "city": "Lyon",
                    "country": "France",
                }
            },
        ),
        Hostile(
            "datablist_people.csv",
            table(
                [["Acme", "Ann", "Lee", "ann@acme.com", "555-0100", "R-1", "https://linkedin.com/in/ann"]],
                headers=datablist,
            ).encode(),
            rows_read=1,
            values={
                2: {
                    "company_name": "Acme",
                    "email": "ann@acme.com",
                    "phone": "555-0100",
                    "external_id": "R-1",
                    "extra.Person Linkedin Url": "https://linkedin.com/in/ann",
                }
            },
        ),
        Hostile(
            "sales_navigator_list.csv",
            table(
                [
                    [
                        "Ann",
                        "Lee",
                        "VP Sales",
                        "Acme",
                        "acme.com",
                        "Lyon, France",
                        "https://linkedin.com/in/ann",
                        "ann@acme.com",
                    ]
                ],
                headers=sales_navigator,
            ).encode(),
            rows_read=1,
            values={
                2: {
                    "company_name": "Acme",
                    "title": "VP Sales",
                    "company_website": "acme.com",
                    "email": "ann@acme.com",
                    "extra.Location": "Lyon, France",
                    "extra.Profile URL": "https://linkedin.com/in/ann",
                }
            },
        ),
        Hostile(
            "hubspot-contacts-2026.csv",
            table([["901", "Ann", "Acme", "ann@acme.com", "555-0100", "acme.com", "France"]], headers=hubspot).encode(),
            rows_read=1,
            details={"mapping_profile": "hubspot_contacts"},
            values={
                2: {
                    "external_id": "901",
                    "company_name": "Acme",
                    "phone": "555-0100",
                    "company_website": "acme.com",
                    "country": "France",
                }
            },
        ),
        Hostile(
            "export.csv",
            table(
                [["00Q1", "Acme", "Lee", "ann@acme.com", "555-0100", "met at fair", "Sam"]], headers=salesforce
            ).encode(),
            rows_read=1,
            details={"mapping_profile": "salesforce_report"},
            config={"mapping_profile": "salesforce_report"},
            values={
                2: {
                    "external_id": "00Q1",
                    "company_name": "Acme",
                    "phone": "555-0100",
                    "notes": "met at fair",
                    "extra.Lead Owner": "Sam",
                }
            },
        ),
    ]


# 5 MB with a line break every 80 characters or so, quotes inside: more than 40 times Python's csv field limit.
LONG_VALUE = "".join(f'call {i}: said "call back", then hung up. {"x" * (i % 37)}\r\n' for i in range(100_000))[
    : 5 * 1024 * 1024
]
LONG_VALUE_LINES = LONG_VALUE.count("\n")
WIDE_COLUMNS = 20_000


def _long_and_wide() -> list[Hostile]:
    long_rows = [
        ["Acme", "ann@acme.com", "short", "short"],  # line 2
        ["Beta", "bob@beta.com", LONG_VALUE, ""],  # line 3: notes are 10,000 characters at most
        ["Gamma", "gus@gamma.com", "", LONG_VALUE],  # an unmapped column keeps any length
        ["Delta", "dan@delta.com", "after", "after"],
    ]
    after_long = 4 + LONG_VALUE_LINES
    wide_headers = ["Company", "Email", *(f"Field {i}" for i in range(WIDE_COLUMNS - 2))]
    wide_rows = [[f"Wide {r}", f"w{r}@wide.com", *(f"v{r}.{i}" for i in range(WIDE_COLUMNS - 2))] for r in range(3)]
    return [
        Hostile(
            "long_values.csv",
            table(long_rows, headers=["Company", "Email", "Notes", "Call transcript"]).encode(),
            rows_read=4,
            rejected={3: "notes is longer than 10000 characters"},
            values={
                2: {"notes": "short", "extra.Call transcript": "short"},
                after_long: {"company_name": "Gamma", "extra.Call transcript": LONG_VALUE},
                after_long + LONG_VALUE_LINES + 1: {"company_name": "Delta", "notes": "after"},
            },
        ),
        Hostile(
            "wide.csv",
            table(wide_rows, headers=wide_headers).encode(),
            rows_read=3,
            values={
                2: {"company_name": "Wide 0", "extra.Field 0": "v0.0", "extra.Field 19997": "v0.19997"},
                4: {"email": "w2@wide.com", "extra.Field 12345": "v2.12345"},
            },
        ),
    ]


@dataclass(frozen=True)
class Language:
    """What a contact export in one language holds: its headers and the values its rows draw from."""

    headers: tuple[str, ...]  # first name, last name, company, phone, email, city, notes
    first_names: tuple[str, ...]
    last_names: tuple[str, ...]
    companies: tuple[str, ...]
    cities: tuple[str, ...]
    notes: tuple[str, ...]


# Exports of the languages Windows-1252 serves, with the punctuation Excel and Word put in: curly quotes, en and em
# dashes, the euro sign, guillemets, the ellipsis.
WESTERN = {
    "French": Language(
        ("Prénom", "Nom", "Société", "Téléphone", "E-mail", "Ville", "Notes"),
        ("Élodie", "Hélène", "François", "Zoé", "Noël", "Gaëlle", "Jérôme", "Cécile", "Loïc", "Anaïs", "Benoît"),
        ("Lefèvre", "Dupré", "Fournier", "Lemaître", "Gérard", "Crépin", "Bézier", "Château", "Mérieux", "Maëlle"),
        (
            "Hôtel Le Méridien",
            "Société Générale – Paris",
            "L’Oréal",
            "Crédit Agricole — Île-de-France",
            "Pâtisserie « Ô Délices »",
            "Cafés Richard & Fils",
            "Électricité Générale SARL",
        ),
        ("Orléans", "Besançon", "Nîmes", "Montréal", "Saint-Étienne", "Béziers", "Périgueux", "Sète"),
        (
            "« VIP »",
            "12,50 €",
            "rappeler jeudi…",
            "n’a pas répondu",
            "devis envoyé – 1 200 €",
            "intéressé par l’offre “Premium”",
            "",
            "à relancer après l’été",
        ),
    ),
    "German": Language(
        ("Vorname", "Nachname", "Firma", "Telefon", "E-Mail", "Ort", "Notizen"),
        ("Jürgen", "Björn", "Käthe", "Günther", "Jörg", "Bärbel", "Sören", "Ulrike", "Matthäus", "Dörte"),
        ("Müller", "Weiß", "Schäfer", "Groß", "Köhler", "Böhm", "Krüger", "Vogel", "Süß"),
        (
            "Müller & Söhne GmbH",
            "Bäckerei Groß – Köln",
            "Süßwaren Weiß KG",
            "Öko-Bau AG",
            "Brauerei Härtl „Zum Löwen“",
            "Straßenbau Nord GmbH",
        ),
        ("München", "Köln", "Düsseldorf", "Nürnberg", "Lübeck", "Gießen", "Osnabrück", "Zürich"),
        (
            "„dringend“ zurückrufen",
            "Angebot über 1.250,00 €",
            "Größe: XL",
            "Termin am Montag…",
            "Rückfrage – Preis pro Stück",
            "",
            "Kunde seit 2011 · Stammkunde",
            "‚vorläufig‘ reserviert",
        ),
    ),
    "Spanish": Language(
        ("Nombre", "Apellidos", "Empresa", "Teléfono", "Correo electrónico", "Ciudad", "Observaciones"),
        ("José", "María", "Íñigo", "Begoña", "Jesús", "Inés", "Ramón", "Sofía", "Andrés", "Nuria"),
        ("Muñoz", "Peña", "Ibáñez", "Gómez", "Martínez", "Núñez", "Sánchez", "Álvarez", "Cañizares"),
        (
            "Telefónica España",
            "Construcciones Peñalver – Bilbao",
            "Café «La Única»",
            "Viñedos Ordóñez S.L.",
            "Panadería Muñoz y Cía.",
        ),
        ("Logroño", "Málaga", "Córdoba", "A Coruña", "León", "Cádiz", "Ávila", "San Sebastián"),
        (
            "¿Llamar el lunes?",
            "¡Cliente preferente!",
            "presupuesto: 3.400 €",
            "envió catálogo…",
            "“urgente” según el jefe",
            "",
            "1.º contacto en la feria",
            "pidió el nº de pedido",
        ),
    ),
    "Portuguese": Language(
        ("Nome", "Apelido", "Empresa", "Telefone", "E-mail", "Cidade", "Observações"),
        ("João", "Conceição", "Inês", "Sebastião", "Ângela", "Gonçalo", "Assunção", "Tomás", "Lúcia", "Luís"),
        ("Gonçalves", "Simões", "Magalhães", "Araújo", "Brandão", "Guimarães", "Leitão", "Calçada"),
        (
            "Pastelaria São Bento",
            "Construções Leitão – Porto",
            "JOÃO & IRMÃOS LDA",
            "Padaria Pão Quente",
            "Associação Cultural “Ação”",
        ),
        ("São Paulo", "Braga", "Évora", "Setúbal", "Guimarães", "Ponta Delgada", "Belém", "Coimbra"),
        (
            "ligar à tarde",
            "orçamento de 2.500 €",
            "não atende…",
            "“prioridade” máxima",
            "",
            "reunião – 3.ª feira",
            "SÃO MIGUEL",
        ),
    ),
    "Italian": Language(
        ("Nome", "Cognome", "Azienda", "Telefono", "E-mail", "Città", "Note"),
        ("Niccolò", "Lucrezia", "Nicolò", "Mattia", "Gioacchino", "Ludovica", "Tommaso", "Annalisa"),
        ("Cavalieri", "Colombo", "Dell’Acqua", "Sant’Angelo", "D’Amico", "Ricciardi", "Mazzà", "Cantù"),
        (
            "Caffè Città Alta",
            "Società Agricola Sant’Anna",
            "Officina Cantù – Milano",
            "Pasticceria «Dolcè»",
            "L’Antica Pizzeria",
        ),
        ("Forlì", "Cantù", "Città di Castello", "Sant’Agata", "Paternò", "Portofino", "Napoli", "Mestre"),
        ("richiamare lunedì…", "preventivo: 980,00 €", "è già cliente", "“molto” interessato", "", "perché no?"),
    ),
    "Dutch": Language(
        ("Voornaam", "Achternaam", "Bedrijf", "Telefoon", "E-mail", "Plaats", "Opmerkingen"),
        ("Chloë", "Zoë", "Daniël", "Noëlle", "Joël", "Anaïs", "Rafaël", "Ineke", "Sjoerd", "Gerrit"),
        ("de Vries", "van ’t Hof", "Jansen", "Bakker", "’s-Gravesande", "Visser", "Smit", "Meijer"),
        (
            "Café ’t Hoekje",
            "Bakkerij Van Één – Utrecht",
            "Reëel Vastgoed B.V.",
            "Drukkerij „De Zon“",
            "Coöperatie Vóór Elkaar U.A.",
            "Ideeën & Zo",
        ),
        ("’s-Hertogenbosch", "Utrecht", "Leeuwarden", "Zwolle", "Roermond", "Groningen", "Delft"),
        (
            "terugbellen na 14:00…",
            "offerte € 1.750",
            "“warme” lead",
            "geïnteresseerd in België",
            "",
            "coördinator – inkoop",
            "privé nummer",
        ),
    ),
    "Danish": Language(
        ("Fornavn", "Efternavn", "Virksomhed", "Telefon", "E-mail", "By", "Noter"),
        ("Søren", "Bjørn", "Åse", "Mads", "Sørine", "Jørgen", "Kåre", "Signe", "Nikolaj"),
        ("Jørgensen", "Mølgaard", "Sørensen", "Kjær", "Ærø", "Østergaard", "Bæk", "Dahl"),
        ("Møller & Søn ApS", "Æblegården – Odense", "Bageriet Ø", "Grøn Energi A/S", "Kærgård Maskiner"),
        ("Århus", "København", "Ølstykke", "Næstved", "Holstebro", "Køge", "Rødovre", "Ærøskøbing"),
        ("ring igen på mandag…", "tilbud på 12.500 kr. (ca. 1.675 €)", "“varm” kunde", "", "går på pension – 2027"),
    ),
    "Norwegian": Language(
        ("Fornavn", "Etternavn", "Firma", "Telefon", "E-post", "Sted", "Merknader"),
        ("Øystein", "Åsmund", "Bjørg", "Håkon", "Kjærsti", "Ståle", "Ingrid", "Tormod"),
        ("Håland", "Sæther", "Bråten", "Ødegård", "Løvås", "Kjærnes", "Haugen", "Bøe"),
        ("Bøker & Blåbær AS", "Ålesund Fisk – Sjømat", "Tønsberg Trelast", "Nordlys Kraft AS", "Sørlandet Båt"),
        ("Tromsø", "Ålesund", "Bærum", "Bodø", "Tønsberg", "Lillestrøm", "Førde", "Mo i Rana"),
        ("ring før lunsj…", "pristilbud: 9.900 kr", "“viktig” kunde", "", "møte – neste uke"),
    ),
    "Swedish": Language(
        ("Förnamn", "Efternamn", "Företag", "Telefon", "E-post", "Ort", "Anteckningar"),
        ("Åsa", "Göran", "Märta", "Björn", "Sören", "Ingegärd", "Jörgen", "Håkan", "Örjan"),
        ("Åkesson", "Öberg", "Söderström", "Lindgren", "Hägglund", "Ström", "Näslund", "Björk"),
        ("Åhléns", "Räksmörgås AB", "Öresund Logistik – Malmö", "Glasbruket i Kosta", "Söderberg & Löf"),
        ("Göteborg", "Västerås", "Örebro", "Jönköping", "Luleå", "Umeå", "Malmö", "Växjö"),
        ("ring efter kl. 13…", "offert 4 500 kr", "“het” kund", "", "återkom – vecka 12"),
    ),
    "Finnish": Language(
        ("Etunimi", "Sukunimi", "Yritys", "Puhelin", "Sähköposti", "Kaupunki", "Huomautukset"),
        ("Päivi", "Jyrki", "Sirpa", "Väinö", "Tiina", "Kyösti", "Yrjö", "Jämsä", "Ilkka"),
        ("Hämäläinen", "Mäkinen", "Jääskeläinen", "Pöyhönen", "Lähteenmäki", "Nieminen", "Šarkovski"),
        ("Äänekosken Säästöpankki", "Kylmälä Oy – Tampere", "Pääkaupunkiseudun Kierrätys", "Yhtiö Öljy-Ässä"),
        ("Hämeenlinna", "Jyväskylä", "Seinäjoki", "Pori", "Mäntsälä", "Äänekoski", "Vöyri", "Espoo"),
        ("soita maanantaina…", "tarjous 2 400 €", "“kuuma” liidi", "", "tapaaminen – ensi viikolla"),
    ),
    "Icelandic": Language(
        ("Fornafn", "Eftirnafn", "Fyrirtæki", "Sími", "Netfang", "Staður", "Athugasemdir"),
        ("Þórður", "Guðrún", "Sigurður", "Ásdís", "Ævar", "Hildur", "Þóra", "Björk", "Ragnheiður", "Örn"),
        ("Guðmundsdóttir", "Þórsson", "Ólafsdóttir", "Sigurðsson", "Jónsdóttir", "Ágústsson", "Magnússon"),
        ("Ölgerðin Egill Skallagrímsson", "Hótel Saga – Reykjavík", "Þjóðleikhúsið", "Sæbjörg ehf.", "Bæjarins Beztu"),
        ("Reykjavík", "Akureyri", "Ísafjörður", "Seyðisfjörður", "Hafnarfjörður", "Egilsstaðir", "Húsavík"),
        ("hringja á mánudag…", "tilboð: 150.000 kr.", "“heitur” viðskiptavinur", "", "fundur – næsta viku"),
    ),
    "Catalan": Language(
        ("Nom", "Cognoms", "Empresa", "Telèfon", "Correu electrònic", "Població", "Observacions"),
        ("Jordi", "Mercè", "Núria", "Joan", "Montserrat", "Pere", "Laia", "Martí"),
        ("Puigdemont", "Vilaró", "Ferrer", "Pagès", "Rovira", "Soler", "Solé", "Bosch"),
        ("Col·legi d’Arquitectes", "Cooperativa Agrícola de l’Empordà", "Pastisseria «Cal Pep»", "Paral·lel SL"),
        ("Girona", "Lleida", "l’Hospitalet", "Sant Cugat", "Vilafranca", "Reus", "Figueres"),
        ("trucar dilluns…", "pressupost: 1.100 €", "“molt” interessat", "", "visita – la setmana vinent"),
    ),
}
WESTERN_SIZES = (3, 5, 8, 10, 50, 500, 2000)

# Exports of other code pages, each with the code page its writer (Excel on that system) uses.
OTHER_CODE_PAGES = {
    "Russian": (
        "cp1251",
        Language(
            ("Имя", "Фамилия", "Компания", "Телефон", "Эл. почта", "Город", "Примечания"),
            ("Иван", "Пётр", "Наталья", "Сергей", "Ольга", "Дмитрий", "Анна", "Юрий"),
            ("Иванов", "Смирнова", "Кузнецов", "Попова", "Соколов", "Лебедева", "Морозов"),
            ("ООО «Ромашка»", "АО Газпром – Москва", "ИП Петров", "Сбербанк", "ЗАО «Северсталь»"),
            ("Москва", "Санкт-Петербург", "Новосибирск", "Екатеринбург", "Казань", "Самара"),
            ("перезвонить в понедельник…", "счёт на 12 500 руб.", "«горячий» клиент", "", "встреча – вторник"),
        ),
    ),
    "Greek": (
        "cp1253",
        Language(
            ("Όνομα", "Επώνυμο", "Εταιρεία", "Τηλέφωνο", "Email", "Πόλη", "Σημειώσεις"),
            ("Γιώργος", "Μαρία", "Νίκος", "Ελένη", "Δημήτρης", "Κατερίνα", "Σοφία"),
            ("Παπαδόπουλος", "Νικολάου", "Γεωργίου", "Οικονόμου", "Αντωνίου", "Καραγιάννη"),
            ("Εμπορική Α.Ε.", "Ξενοδοχείο Ακρόπολις", "Φούρνος «Ο Γιώργος»", "Τεχνική Κατασκευαστική"),
            ("Αθήνα", "Θεσσαλονίκη", "Πάτρα", "Ηράκλειο", "Λάρισα", "Βόλος"),
            ("τηλεφώνησε Δευτέρα…", "προσφορά 1.200 €", "«ζεστός» πελάτης", "", "συνάντηση – Τρίτη"),
        ),
    ),
    "Czech": (
        "cp1250",
        Language(
            ("Jméno", "Příjmení", "Společnost", "Telefon", "E-mail", "Město", "Poznámky"),
            ("Jiří", "Kateřina", "Tomáš", "Zdeněk", "Lucie", "Petr", "Markéta", "Ondřej"),
            ("Dvořák", "Novotná", "Procházka", "Černý", "Kučerová", "Veselý", "Růžička"),
            ("Pivovar Černá Hora", "Železárny Třinec", "Kavárna „U Tří lilií“", "Stavby Kučera – Brno"),
            ("Brno", "Plzeň", "Ústí nad Labem", "České Budějovice", "Hradec Králové", "Přerov"),
            ("zavolat v pondělí…", "nabídka: 25 000 Kč", "„horký“ zákazník", "", "schůzka – úterý"),
        ),
    ),
    "Hebrew": (
        "cp1255",
        Language(
            ("שם פרטי", "שם משפחה", "חברה", "טלפון", "דואל", "עיר", "הערות"),
            ("יוסי", "מיכל", "אבי", "רונית", "דוד", "שרה", "משה"),
            ("כהן", "לוי", "מזרחי", "פרץ", "ביטון", "דהן", "אברהם"),
            ("בנק הפועלים", "תנובה", "אלביט מערכות", "שטראוס – חיפה", "סופר-פארם"),
            ("תל אביב", "ירושלים", "חיפה", "באר שבע", "נתניה", "אשדוד"),
            ("להתקשר ביום שני…", "הצעה: 4,500 ₪", "לקוח חם", "", "פגישה – יום שלישי"),
        ),
    ),
    "Arabic": (
        "cp1256",
        Language(
            ("الاسم", "اسم العائلة", "الشركة", "الهاتف", "البريد", "المدينة", "ملاحظات"),
            ("محمد", "فاطمة", "أحمد", "ليلى", "خالد", "مريم", "عمر"),
            ("العلي", "الحسن", "منصور", "حداد", "يوسف", "سليمان", "الخطيب"),
            ("شركة الاتصالات", "مصرف الراجحي", "أرامكو – الظهران", "مجموعة بن لادن"),
            ("الرياض", "جدة", "دبي", "القاهرة", "عمّان", "بيروت"),
            ("الاتصال يوم الاثنين…", "عرض: 4500 ريال", "عميل مهم", "", "اجتماع – الثلاثاء"),
        ),
    ),
}


def export_rows(language: Language, rows: int, seed: str = "") -> list[list[str]]:
    """A contact export in `language`: its header row, then `rows` rows drawn from its values, the same every run."""
    pick = random.Random(f"{seed}{rows}").choice
    return [
        list(language.headers),
        *(
            [
                pick(language.first_names),
                pick(language.last_names),
                pick(language.companies),
                f"+{30 + i % 20} {100 + i % 900} {1000 + i * 7 % 9000}",
                f"contact{i}@example.com",
                pick(language.cities),
                pick(language.notes),
            ]
            for i in range(rows)
        ),
    ]


# What a Latin-1 export holds where Windows-1252 has punctuation and letters Latin-1 lacks.
_LATIN_1 = str.maketrans(
    {"’": "'", "‘": "'", "‚": ",", "“": '"', "”": '"', "„": '"', "–": "-", "—": "-", "…": "...", "€": "EUR"}
    | {"Š": "S", "š": "s", "Ž": "Z", "ž": "z", "Œ": "OE", "œ": "oe", "Ÿ": "Y", "•": "*"}
)


def latin_1_rows(rows: list[list[str]]) -> list[list[str]]:
    """The rows as a Latin-1 export writes them."""
    return [[cell.translate(_LATIN_1) for cell in row] for row in rows]


def semicolon_export(rows: list[list[str]]) -> str:
    """The rows as Excel saves "CSV (separated by semicolons)" on a European Windows: CRLF, quotes where needed."""
    return table(rows[1:], ";", "\r\n", headers=rows[0])


def _mixed_encodings() -> list[Hostile]:
    utf8 = "".join(f"Société {i},Zoé,z{i}@x.fr\r\n" for i in range(2, 9)).encode()  # lines 2-8
    cp1252 = "".join(f"Hôtel {i},Hélène,h{i}@x.fr\r\n" for i in range(9, 16)).encode("cp1252")  # lines 9-15
    header = b"Company,First Name,Email\r\n"
    ascii_head = "".join(f"Plain {i},Ann,a{i}@x.com,{'x' * 90}\n" for i in range(2, 3002))  # 300 kB of ASCII
    return [
        # An export appended to another: UTF-8, then Windows-1252 from line 9 on.
        Hostile(
            "utf8_then_windows_1252.csv",
            header + utf8 + cp1252,
            rows_read=14,
            values={8: {"company_name": "Société 8", "first_name": "Zoé"}, 9: {"company_name": "Hôtel 9"}},
            details={"encoding": "utf-8+cp1252"},
            warnings=(
                "lines 9, 10, 11, 12, 13 and 2 more are not UTF-8, the file's other lines are: read as Windows-1252 "
                "(set `encoding:` in the parse step's run config if that is wrong)",
            ),
        ),
        Hostile(
            "utf8_then_cyrillic.csv",
            header + utf8 + "Ромашка,Иван,i@x.ru\r\n".encode("cp1251"),
            error="undecodable content: line 9 is not UTF-8 like line 2, nor Windows-1252 text: save the file in one "
            "encoding, UTF-8",
        ),
        # Nothing but ASCII in the first 256 kB, then a Windows-1252 line: the file is Windows-1252.
        Hostile(
            "ascii_then_windows_1252.csv",
            ("Company,First Name,Email,Notes\n" + ascii_head + "Müller GmbH,Jürgen,j@m.de,“late”\n").encode("cp1252"),
            rows_read=3001,
            values={3002: {"company_name": "Müller GmbH", "notes": "“late”"}},
            details={"encoding": "cp1252"},
            config={"chunk_rows": 5000},  # (not 3000 chunks of the suite's 3 records)
        ),
        Hostile(
            "windows_1252_said_utf8.csv",
            header + utf8 + cp1252,
            config={"encoding": "utf-8"},
            error="undecodable content: line 9 is not utf-8 text, the encoding set in run config",
        ),
        Hostile(
            "not_ascii.csv",
            header + utf8,
            config={"encoding": "ascii"},
            error="undecodable content: line 2 is not ascii text, the encoding set in run config",
        ),
        Hostile(
            "undefined_in_windows_1252.csv",
            header + b"Acme,Ann,a@acme.com\r\nBeta,B\x81b,b@beta.com\r\n",
            config={"encoding": "cp1252"},
            error="undecodable content: line 3 is not cp1252 text; set the file's `encoding:` in the parse step's "
            "run config (ops: leads: ops: parse: config)",
        ),
    ]


def _garbled() -> list[Hostile]:
    french = semicolon_export(export_rows(WESTERN["French"], 5))
    garbled_values = [
        ["Acme", "ann@acme.com", "São Paulo", "fine"],  # Portuguese, not garbled
        ["SociÃ©tÃ© GÃ©nÃ©rale", "sg@sg.fr", "Paris", "fine"],  # line 3: UTF-8 read as Windows-1252, saved again
        ["JOÃO & IRMÃOS LDA", "joao@irmaos.pt", "Ã‰vora", "Pr\ufffdsident"],  # line 4: Évora, and a lost é
        ["Lâ€™OrÃ©al", "info@loreal.fr", "Clichy", "« VIP » – 12,50 €"],
        ["Ã", "a@x.com", "", ""],
    ]
    windows = [["L’Atelier", "a@atelier.fr", "12,50 €"], ["Acme", "b@acme.com", "ok"], ["Café “Bon”", "c@cafe.fr", "…"]]
    before_writing = "it was garbled before the file was written (UTF-8 text read as Windows-1252 or Latin-1)"
    set_cp1252 = "the file is Windows-1252, not Latin-1: set `encoding: cp1252` in the parse step's run config"
    return [
        Hostile(
            "mojibake_values.csv",
            table(garbled_values, headers=["Company", "Email", "City", "Notes"]).encode(),
            rows_read=5,
            values={3: {"company_name": "SociÃ©tÃ© GÃ©nÃ©rale"}, 4: {"company_name": "JOÃO & IRMÃOS LDA"}},
            warnings=(
                "column 'Company': 2 values garbled, on lines 3 and 5 (e.g. 'SociÃ©tÃ© GÃ©nÃ©rale', probably "
                f"'Société Générale'), imported as written; {before_writing}, so no `encoding:` reads it right",
                "column 'City': 1 value garbled, on line 4 (e.g. 'Ã‰vora', probably 'Évora'), imported as written; "
                f"{before_writing}, so no `encoding:` reads it right",
                "column 'Notes': 1 value garbled, on line 4 (e.g. 'Pr\ufffdsident'), imported as written; "
                "U+FFFD (\ufffd) stands where characters were lost before the file was written",
            ),
        ),
        Hostile(
            "windows_1252_read_as_latin_1.csv",
            table(windows, headers=["Company", "Email", "Notes"]).encode("cp1252"),
            rows_read=3,
            config={"encoding": "latin-1"},
            values={2: {"company_name": "L\x92Atelier"}},
            warnings=(
                "column 'Company': 2 values garbled, on lines 2 and 4 (e.g. 'L\\x92Atelier', probably 'L’Atelier'), "
                f"imported as written; {set_cp1252} (ops: leads: ops: parse: config)",
                "column 'Notes': 2 values garbled, on lines 2 and 4 (e.g. '12,50 \\x80', probably '12,50 €'), "
                f"imported as written; {set_cp1252} (ops: leads: ops: parse: config)",
            ),
        ),
        Hostile(
            "windows_1252_read_as_mac_latin2.csv",
            french.encode("cp1252"),
            config={"encoding": "mac_latin2"},
            error="garbled header 'Prťnom' in column 1, probably 'Prénom' (2 more garbled: ['Sociťtť', 'Tťlťphone']): "
            "the file is Windows-1252, not mac-latin2: set `encoding: cp1252` in the parse step's run config "
            "(ops: leads: ops: parse: config)",
        ),
        Hostile(
            "utf_8_read_as_windows_1252.csv",
            french.encode(),
            config={"encoding": "cp1252"},
            error="garbled header 'PrÃ©nom' in column 1, probably 'Prénom' (2 more garbled: ['SociÃ©tÃ©', "
            "'TÃ©lÃ©phone']): the file is UTF-8, not Windows-1252: set `encoding: utf-8` in the parse step's run "
            "config (ops: leads: ops: parse: config)",
        ),
        Hostile(
            "mojibake_header.csv",
            "SociÃ©tÃ©,PrÃ©nom,E-mail\nAcme,Ann,ann@acme.com\n".encode(),
            error=f"garbled header 'SociÃ©tÃ©' in column 1, probably 'Société' (1 more garbled: ['PrÃ©nom']): "
            f"{before_writing}, so no `encoding:` reads it right",
        ),
    ]


def _failures() -> list[Hostile]:
    png = b"\x89PNG\r\n\x1a\n" + bytes(200)
    plain_zip = io.BytesIO()
    with zipfile.ZipFile(plain_zip, "w") as archive:
        archive.writestr("leads.csv", "Company\nAcme\n")
    big = b"Company,Email\n" + b"Acme,ann@acme.com\n" * 90_000  # 1.5 MB
    return [
        Hostile("empty.csv", b"", error="the file is empty"),
        Hostile("blank_lines.csv", b"\n\n  \n", error="the file is empty"),
        Hostile("header_only.csv", b"Company,Email\r\n", error="the file has a header but no records"),
        Hostile("binary.csv", bytes(range(256)) * 40, error="binary content: this is not a text file"),
        # Text-like bytes that no encoding makes sense of (no control bytes, not UTF-8, no code page fits).
        Hostile(
            "undecodable.csv",
            bytes(range(0x80, 0x100)) * 40,
            error="undecodable content: the text is neither UTF-8 nor any other encoding we recognise",
        ),
        Hostile("picture.csv", png, error="unsupported format: a PNG image, not a CSV or Excel file"),
        Hostile(
            "leads.zip", plain_zip.getvalue(), error="unsupported format: a ZIP archive that is not an Excel workbook"
        ),
        Hostile(
            "unterminated.csv",
            b'Company,Notes\nAcme,fine\nBeta,"never closed\nGamma,x\n',
            error="unterminated quote: the quoted value starting on line 3 never closes",
        ),
        Hostile(
            "no_company.csv",
            b"Name,Email\nAnn,ann@x.com\n",
            error="no column maps to company_name; the headers found are ['Name', 'Email']",
        ),
        Hostile(
            "two_emails.csv",
            b"Company,Email,E-mail\nAcme,a@x.com,b@x.com\n",
            error="columns 'Email' and 'E-mail' both map to the field 'email'",
        ),
        Hostile("too_big.csv", big, config={"max_file_mb": 1}, error="the file is 1.5 MB, above the 1 MB limit"),
        Hostile(
            "bomb.csv.gz",
            gzip.compress(big),
            config={"max_file_mb": 1},
            error="the compressed file inflates to more than 1 MB, the size limit",
        ),
        Hostile(
            "bomb.xlsx",
            zip_bomb(64),
            config={"max_unzipped_mb": 16},
            error="the workbook declares 64 MB uncompressed, above the 16 MB limit",
        ),
    ]


def hostile_files() -> list[Hostile]:
    """Every hostile file with its expected outcome."""
    return [
        *_dialects(),
        *_quoting(),
        *_long_and_wide(),
        *_mixed_encodings(),
        *_garbled(),
        *_excel(),
        *_mappings(),
        *_failures(),
    ]


def write(directory: Path) -> list[Path]:
    """Write the set into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for hostile in hostile_files():
        path = directory / hostile.name
        path.write_bytes(hostile.content)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write(Path(sys.argv[1] if len(sys.argv) > 1 else "hostile_files")):
        print(written)
