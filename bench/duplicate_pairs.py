"""Labelled possible duplicates, for a fuzzy duplicate detector's precision and recall, and a workload for its cost.

    python bench/duplicate_pairs.py OUT_DIR --existing N --incoming M --seed S
                                    [--duplicate-rate R] [--hard-negative-rate R]

Writes OUT_DIR/existing.csv (N distinct people, to import first), OUT_DIR/incoming.csv (M rows, to import
next) and OUT_DIR/labels.csv (what each incoming row is, by the line it is on: `source_row`, 2 for the first
row under the header), and prints the label counts as one JSON line. The same seed gives the same files.

Incoming rows are true duplicates of existing leads (each with an email no existing lead has, so exact
matching misses them, and one to three of the variations CRM data accumulates), hard non-duplicates (a
colleague at the same company; a namesake at another company) and new people. Surnames, first names,
companies and cities are Zipf-skewed as in real CRMs (Smith is about 1% of leads, the largest company about
1%): that is what makes blocking expensive.

From Python (bench/ is not a package: run from it, or load the file):

    existing = existing_leads(1_000_000, seed=1)
    rows, labels = incoming_rows(existing, 100_000, seed=1)
    report = evaluate(labels, predictions)  # predictions: source_row, candidate_email, band

A true duplicate keeps at least two corroborating fields, as this module judges them (`_corroborations`):
the company (the same name once legal forms, case, accents and punctuation are dropped), the phone's digits
(its last nine), the email's local part (lower case, without its +tag and without dots, underscores and other
punctuation) and the city. About 5% keep exactly one: kind `duplicate_one_corroboration`.

labels.csv: source_row, kind (KINDS), original_email (the existing lead a duplicate repeats), variations (what
was changed, comma-separated: VARIATIONS, plus the email rewrite when none of them gave a new email, and for
hard non-duplicates what they share with the lead they resemble), resembles_email (that lead). Every lead has
a company: the importer rejects rows without one.
"""

import argparse
import functools
import json
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path

import nicknames
import numpy as np
import polars as pl


def _words(text: str) -> tuple[str, ...]:
    """The words of `text`: lists of names read better as text."""
    return tuple(text.split())


# bench/generate.py's columns, in its order: the importer maps every one of them.
HEADERS = (
    "Company Name",
    "First Name",
    "Last Name",
    "Email",
    "Phone",
    "Title",
    "Industry",
    "Website",
    "City",
    "State",
    "Country",
    "External ID",
    "Notes",
    "Lead Source",
    "Owner",
)
KINDS = ("duplicate", "duplicate_one_corroboration", "same_company_other_person", "same_name_other_company", "new")
DUPLICATE_KINDS = ("duplicate", "duplicate_one_corroboration")
HARD_POSITIVE_SHARE = 0.05
BANDS = ("flagged", "review")

# Most common first: the order is the Zipf rank.
ENGLISH_FIRST = _words("""
James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard Susan Joseph
Jessica Thomas Sarah Christopher Karen Charles Lisa Daniel Nancy Matthew Betty Anthony Margaret Mark Sandra
Donald Ashley Steven Kimberly Paul Emily Andrew Donna Joshua Michelle Kenneth Carol Kevin Amanda Brian Dorothy
George Melissa Timothy Deborah Ronald Stephanie Edward Rebecca Jason Sharon Jeffrey Laura Ryan Cynthia Jacob
Kathleen Gary Amy Nicholas Angela Eric Shirley Jonathan Anna Stephen Brenda Larry Pamela Justin Emma Scott
Nicole Brandon Helen Benjamin Samantha Samuel Katherine Gregory Christine Alexander Debra Frank Rachel Patrick
Carolyn Raymond Janet Jack Catherine Dennis Maria Jerry Heather Tyler Diane Aaron Ruth Julie Adam Olivia Nathan
Joyce Henry Virginia Douglas Victoria Zachary Kelly Peter Lauren Kyle Christina Ethan Joan Walter Evelyn Noah
Judith Jeremy Megan Christian Andrea Keith Cheryl Roger Hannah Terry Jacqueline Gerald Martha Harold Gloria
Sean Teresa Austin Ann Carl Sara Arthur Madison Lawrence Frances Dylan Kathryn Jesse Janice Jordan Jean Bryan
Abigail Billy Alice Joe Julia Bruce Judy Gabriel Sophia Logan Grace Albert Denise Willie Amber Alan Doris Juan
Marilyn Wayne Danielle Elijah Beverly Randy Isabella Roy Theresa Vincent Diana Ralph Natalie Eugene Brittany
Russell Charlotte Bobby Marie Mason Kayla Philip Alexis Louis Lori Hugo Nina Marc
""")
INTERNATIONAL_FIRST = _words("""
José Chloé Léa Zoë François Inès Jürgen Hélène Lukas Sebastian Stefan Andreas Matthias Pierre Étienne Amélie
Céline Margaux Mathieu Benoît Raphaël Noémie Élodie Jérôme Renée André René Ana Lucía Sofía Javier Alejandro
Pablo Carmen Núria Marta Álvaro Ángel Giulia Francesca Giuseppe Luca Matteo Alessandro Chiara Björn Günter
Jörg Sven Lars Ingrid Mohammed Fatima Youssef Karim Farid Ahmed Wei Yuki Hiroshi Priya Rahul Arjun Anaïs
Maëlle Joël Zoé Agnès Thérèse Jean-Luc Marie-Claire Ségolène Cécile Gaëlle
""")
# The nicknames people commonly go by (checked against the nicknames package's pairs, `_form_lists`).
COMMON_NICKNAMES = {
    "Robert": ("Bob", "Rob", "Bobby"),
    "William": ("Bill", "Will", "Billy"),
    "James": ("Jim", "Jimmy", "Jamie"),
    "John": ("Johnny", "Jack", "Jon"),
    "Michael": ("Mike", "Mick"),
    "David": ("Dave",),
    "Richard": ("Rick", "Dick", "Rich"),
    "Joseph": ("Joe", "Joey"),
    "Thomas": ("Tom", "Tommy"),
    "Christopher": ("Chris",),
    "Charles": ("Charlie", "Chuck"),
    "Daniel": ("Dan", "Danny"),
    "Matthew": ("Matt",),
    "Anthony": ("Tony",),
    "Donald": ("Don",),
    "Steven": ("Steve",),
    "Stephen": ("Steve",),
    "Andrew": ("Andy", "Drew"),
    "Joshua": ("Josh",),
    "Kenneth": ("Ken", "Kenny"),
    "Edward": ("Ed", "Eddie", "Ted"),
    "Timothy": ("Tim",),
    "Ronald": ("Ron",),
    "Jeffrey": ("Jeff",),
    "Nicholas": ("Nick",),
    "Jonathan": ("Jon",),
    "Gregory": ("Greg",),
    "Alexander": ("Alex",),
    "Benjamin": ("Ben",),
    "Samuel": ("Sam",),
    "Patrick": ("Pat",),
    "Raymond": ("Ray",),
    "Gerald": ("Jerry",),
    "Lawrence": ("Larry",),
    "Peter": ("Pete",),
    "Zachary": ("Zach",),
    "Douglas": ("Doug",),
    "Elizabeth": ("Liz", "Beth", "Betsy"),
    "Jennifer": ("Jen", "Jenny"),
    "Patricia": ("Pat", "Patty", "Trish"),
    "Margaret": ("Maggie", "Peggy", "Meg"),
    "Katherine": ("Kate", "Kathy", "Katie"),
    "Catherine": ("Cathy", "Kate"),
    "Susan": ("Sue", "Susie"),
    "Deborah": ("Debbie", "Deb"),
    "Rebecca": ("Becky",),
    "Samantha": ("Sam",),
    "Christine": ("Chris",),
    "Victoria": ("Vicky", "Tori"),
    "Kimberly": ("Kim",),
    "Pamela": ("Pam",),
    "Cynthia": ("Cindy",),
    "Abigail": ("Abby",),
    "Jacqueline": ("Jackie",),
    "Stephanie": ("Steph",),
    "Melissa": ("Missy", "Mel"),
    "Amanda": ("Mandy",),
    "Barbara": ("Barb",),
    "Dorothy": ("Dot", "Dottie"),
    "Sandra": ("Sandy",),
    "Judith": ("Judy",),
    "Theresa": ("Tess",),
    "Frances": ("Fran",),
    "Virginia": ("Ginny",),
    "Kathleen": ("Kathy",),
}
SURNAMES = (
    *_words("""
Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez Wilson
Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark Ramirez Lewis
Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera
Campbell Mitchell Carter Roberts Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann
Bernard Dubois Durand Lefèvre Moreau Laurent Simon Michel Leroy Roux Rossi Russo Ferrari Esposito Bianchi
Romano Colombo Ricci Marino Greco Fernández Jiménez Álvarez Gutiérrez Peña Muñoz Domínguez Vázquez Núñez
Castro Gomez Diaz Cruz Morales Reyes Ortiz Chavez Ramos Ruiz Phillips Evans Turner Parker Collins Edwards
Stewart Morris Murphy Cook Rogers Morgan Peterson Cooper Reed Bailey Bell Kelly Howard Ward Cox Richardson
Wood Watson Brooks Bennett Gray James Hughes Price Sanders Myers Long Ross Foster Powell Jenkins Perry Russell
Sullivan Butler Barnes Fisher Henderson Coleman Simmons Patterson Jordan Reynolds Hamilton Graham Kim Wallace
West Cole Hayes Bryant Gibson Ellis Stevens Murray Ford Marshall Owens McDonald Harrison Kennedy Wells
Alexander Griffin Hunt Palmer Black Robertson Stone Fox Knight Grant Hunter Mason Rose Spencer Dunn Hart
Porter Webb Warren Mills Holmes Ryan Boyd Tucker Shaw Gordon Chen Wang Li Zhang Liu Yang Huang Zhao Wu Zhou
Patel Shah Singh Kumar Sharma Gupta Khan Ali Ahmed Hassan Cohen Levy O'Brien O'Connor O'Neill Walsh Byrne
Doyle Kowalski Nowak Wiśniewski Wójcik Kowalczyk Novák Dvořák Horváth Nagy Kovács Tóth Szabó Papadopoulos
Silva Santos Oliveira Souza Pereira Costa Almeida Carvalho Gonçalves Rocha Ferreira Sousa Jansen Bakker Visser
Smit Meijer Mulder Peeters Janssens Maes Jacobs Claes Wouters Dupont Lambert Fontaine Rousseau Vincent Girard
Bonnet Dupuis François Mercier Blanc Guérin Boyer Garnier Chevalier Faure André Gauthier Perrin Morel Clément
Lemaire Fournier Gérard Henry Schäfer Koch Bauer Richter Klein Wolf Schröder Neumann Schwarz Zimmermann Braun
Krüger Hofmann Hartmann Lange Schmitt Werner Krause Meier Lehmann Schmid Köhler Huber Kaiser Fuchs Peters
Lang Scholz Möller Jung Hahn Vogel Friedrich Keller Günther Frank Berger Winkler Roth Beck Lorenz Baumann
Franke Albrecht Ludwig Winter Kraus Sato Suzuki Takahashi Tanaka Watanabe Ito Yamamoto Nakamura Kobayashi
Andersson Johansson Karlsson Nilsson Eriksson Larsson Olsen Hansen Pedersen Nielsen Jensen Christensen
Virtanen Korhonen Ivanov Petrov Popescu Ionescu Yilmaz Kaya Demir Sahin
"""),
    *("de Vries", "van Dijk", "de Jong", "Van der Berg", "D'Angelo", "Di Marco"),
)
# Rarer surnames: prefix + suffix syllables, after the typed ones (a long tail, as in real data).
SURNAME_PREFIXES = _words("""
Al Bran Cal Dor El Fen Gar Hal Ing Jor Kel Lor Mar Nor Ost Pel Quin Ros Sal Tor Ul Val Wes Yar Zel Bre Cor Dun
Fal Gil Hed Kam Lin Mol Ned Pra Rud Sten Tre Wal Ash Brom Cres Dal Ever Hol
""")
SURNAME_SUFFIXES = _words("""
by son berg mann stein ford ley ton wick hurst croft well more field ini etti ard eau ov ski sen dal ez ière ès
höfer strom vik quist
""")
# The same names with their accents: what "accents added" writes (Jose -> José); stripping covers the rest.
ACCENTED = {
    "Jose": "José",
    "Zoe": "Zoë",
    "Chloe": "Chloé",
    "Ines": "Inès",
    "Francois": "François",
    "Jurgen": "Jürgen",
    "Lea": "Léa",
    "Helene": "Hélène",
    "Andre": "André",
    "Rene": "René",
    "Renee": "Renée",
    "Jerome": "Jérôme",
    "Celine": "Céline",
    "Raphael": "Raphaël",
    "Lucia": "Lucía",
    "Sofia": "Sofía",
    "Alvaro": "Álvaro",
    "Angel": "Ángel",
    "Bjorn": "Björn",
    "Joel": "Joël",
    "Agnes": "Agnès",
    "Muller": "Müller",
    "Pena": "Peña",
    "Lefevre": "Lefèvre",
    "Garcia": "García",
    "Gonzalez": "González",
    "Rodriguez": "Rodríguez",
    "Lopez": "López",
    "Martinez": "Martínez",
    "Sanchez": "Sánchez",
    "Perez": "Pérez",
    "Gomez": "Gómez",
    "Hernandez": "Hernández",
    "Ramirez": "Ramírez",
    "Diaz": "Díaz",
    "Schafer": "Schäfer",
    "Kruger": "Krüger",
    "Schroder": "Schröder",
    "Gunther": "Günther",
    "Moller": "Möller",
    "Kohler": "Köhler",
    "Guerin": "Guérin",
    "Gerard": "Gérard",
    "Clement": "Clément",
}
COMPANY_WORDS = _words("""
Acme Globex Initech Umbrella Hooli Vandelay Stark Wayne Soylent Cyberdyne Blue Red Green Silver Golden North
South East West Northwind Summit Pinnacle Apex Vertex Quantum Nova Stellar Orbit Atlas Titan Phoenix Falcon
Eagle Lion Tiger Oak Pine Cedar Maple River Lake Ocean Harbor Bay Coastal Mountain Valley Prairie Desert Arctic
Polar Solar Lunar Star Bright Clear Swift Rapid Prime First United Allied Global National Metro Urban Royal
Imperial Liberty Pioneer Frontier Heritage Legacy Keystone Cornerstone Bluebird Redwood Ironclad Iron Steel
Copper Granite Crystal Diamond Emerald Sapphire Ruby Onyx Zenith Horizon Sunrise Sunset Evergreen Highland
Riverside Lakeside Hillside Westfield Eastgate Kingsley Ashford Élan Étoile Lumière Nordlicht Sonnen Alpen Rhône
Loire Iberia Terra Aurora Vela Orion Sirius Helix Nimbus Cobalt Indigo Scarlet Amber Jade
""")
COMPANY_KINDS = _words("""
Systems Labs Logistics Analytics Partners Solutions Technologies Dynamics Networks Foods Energy Capital Health
Media Consulting Software Industries Holdings Ventures Robotics Pharma Motors Textiles Works Studio Design
Digital Cloud Data Security Bank Insurance Logic Marine Aerospace Biotech Farms Apparel Retail Supply Freight
Realty Properties Construction Engineering Electric Chemicals Metals Paper Packaging Games Travel Hotels
Telecom Optics Instruments Devices Medical Learning Brands Outfitters Trading Imports
""")
# Legal forms by country, as companies there write them; "" is none at all.
LEGAL_SUFFIXES = {
    "USA": ("Inc", "Inc.", "Incorporated", "LLC", "Corp", "Corporation", "Co.", ""),
    "Canada": ("Inc", "Inc.", "Ltd", "Corp", ""),
    "UK": ("Ltd", "Limited", "PLC", ""),
    "Ireland": ("Ltd", "Limited", ""),
    "Australia": ("Ltd", "Limited", ""),
    "Germany": ("GmbH", ""),
    "Austria": ("GmbH", ""),
    "Switzerland": ("GmbH", "SA", ""),
    "France": ("SAS", "SA", "S.A.", ""),
    "Belgium": ("SA", "BV", ""),
    "Spain": ("S.A.", "SA", ""),
    "Italy": ("S.A.", "SA", ""),
    "Netherlands": ("BV", ""),
}
# The other ways of writing each legal form (every one of them still a legal form to schema.LEGAL_FORMS).
SUFFIX_FORMS = {
    "Inc": ("Inc.", "Incorporated"),
    "Inc.": ("Inc", "Incorporated"),
    "Incorporated": ("Inc", "Inc."),
    "LLC": ("L.L.C.", "llc"),
    "Ltd": ("Ltd.", "Limited"),
    "Limited": ("Ltd", "Ltd."),
    "Corp": ("Corp.", "Corporation"),
    "Corporation": ("Corp", "Corp."),
    "Co.": ("Co", "Company"),
    "GmbH": ("GMBH", "Gmbh"),
    "SAS": ("S.A.S.", "sas"),
    "SA": ("S.A.", "S.A"),
    "S.A.": ("SA", "S.A"),
    "PLC": ("plc", "Plc"),
    "BV": ("bv", "Bv"),
}
TLD = {
    "USA": ".com",
    "Canada": ".ca",
    "UK": ".co.uk",
    "Ireland": ".ie",
    "Australia": ".com.au",
    "Germany": ".de",
    "Austria": ".at",
    "Switzerland": ".ch",
    "France": ".fr",
    "Belgium": ".be",
    "Spain": ".es",
    "Italy": ".it",
    "Netherlands": ".nl",
}
# City,state[,area code of North American numbers]; ... by country, largest first.
CITIES_BY_COUNTRY = {
    "USA": """
    New York,NY,212; Los Angeles,CA,213; Chicago,IL,312; Houston,TX,713; Phoenix,AZ,602; Philadelphia,PA,215;
    San Antonio,TX,210; San Diego,CA,619; Dallas,TX,214; San Jose,CA,408; Austin,TX,512; Jacksonville,FL,904;
    Fort Worth,TX,817; Columbus,OH,614; Charlotte,NC,704; San Francisco,CA,415; Indianapolis,IN,317;
    Seattle,WA,206; Denver,CO,303; Washington,DC,202; Boston,MA,617; El Paso,TX,915; Nashville,TN,615;
    Detroit,MI,313; Oklahoma City,OK,405; Portland,OR,503; Las Vegas,NV,702; Memphis,TN,901; Louisville,KY,502;
    Baltimore,MD,410; Milwaukee,WI,414; Albuquerque,NM,505; Tucson,AZ,520; Fresno,CA,559; Sacramento,CA,916;
    Kansas City,MO,816; Mesa,AZ,480; Atlanta,GA,404; Omaha,NE,402; Colorado Springs,CO,719; Raleigh,NC,919;
    Miami,FL,305; Long Beach,CA,562; Virginia Beach,VA,757; Oakland,CA,510; Minneapolis,MN,612; Tulsa,OK,918;
    Tampa,FL,813; Arlington,TX,817; New Orleans,LA,504; Wichita,KS,316; Cleveland,OH,216; Bakersfield,CA,661;
    Anaheim,CA,714; Honolulu,HI,808; Riverside,CA,951; Corpus Christi,TX,361; Lexington,KY,859; Stockton,CA,209;
    St. Louis,MO,314; Saint Paul,MN,651; Pittsburgh,PA,412; Cincinnati,OH,513; Anchorage,AK,907;
    Greensboro,NC,336; Plano,TX,972; Newark,NJ,973; Orlando,FL,407; Irvine,CA,949; Toledo,OH,419; Jersey
    City,NJ,201; Durham,NC,919; Fort Wayne,IN,260; St. Petersburg,FL,727; Laredo,TX,956; Buffalo,NY,716;
    Madison,WI,608; Lubbock,TX,806; Scottsdale,AZ,480; Reno,NV,775; Boise,ID,208; Richmond,VA,804;
    Spokane,WA,509; Des Moines,IA,515; Salt Lake City,UT,801; Birmingham,AL,205; Rochester,NY,585;
    Hartford,CT,860; Providence,RI,401
    """,
    "UK": """
    London,ENG; Manchester,ENG; Birmingham,ENG; Leeds,ENG; Glasgow,SCT; Liverpool,ENG; Bristol,ENG;
    Sheffield,ENG; Edinburgh,SCT; Leicester,ENG; Coventry,ENG; Bradford,ENG; Cardiff,WLS; Belfast,NIR;
    Nottingham,ENG; Newcastle upon Tyne,ENG; Southampton,ENG; Brighton,ENG; Oxford,ENG; Cambridge,ENG
    """,
    "Germany": """
    Berlin,BE; Hamburg,HH; München,BY; Köln,NW; Frankfurt am Main,HE; Stuttgart,BW; Düsseldorf,NW; Leipzig,SN;
    Dortmund,NW; Essen,NW; Bremen,HB; Dresden,SN; Hannover,NI; Nürnberg,BY; Duisburg,NW; Bochum,NW;
    Wuppertal,NW; Bielefeld,NW; Bonn,NW; Münster,NW
    """,
    "France": """
    Paris,IDF; Marseille,PAC; Lyon,ARA; Toulouse,OCC; Nice,PAC; Nantes,PDL; Strasbourg,GES; Montpellier,OCC;
    Bordeaux,NAQ; Lille,HDF; Rennes,BRE; Reims,GES; Le Havre,NOR; Saint-Étienne,ARA; Toulon,PAC; Grenoble,ARA;
    Dijon,BFC; Angers,PDL; Nîmes,OCC; Aix-en-Provence,PAC
    """,
    "Spain": """
    Madrid,MD; Barcelona,CT; Valencia,VC; Sevilla,AN; Zaragoza,AR; Málaga,AN; Murcia,MC; Palma,IB; Las
    Palmas,CN; Bilbao,PV; Alicante,VC; Córdoba,AN; Valladolid,CL; Vigo,GA; Gijón,AS
    """,
    "Italy": """
    Roma,RM; Milano,MI; Napoli,NA; Torino,TO; Palermo,PA; Genova,GE; Bologna,BO; Firenze,FI; Bari,BA; Catania,CT
    """,
    "Canada": """
    Toronto,ON,416; Montréal,QC,514; Vancouver,BC,604; Calgary,AB,403; Edmonton,AB,780; Ottawa,ON,613;
    Winnipeg,MB,204; Québec,QC,418; Hamilton,ON,905; Halifax,NS,902
    """,
    "Netherlands": """
    Amsterdam,NH; Rotterdam,ZH; Den Haag,ZH; Utrecht,UT; Eindhoven,NB; Groningen,GR; Tilburg,NB; Almere,FL
    """,
    "Australia": """
    Sydney,NSW; Melbourne,VIC; Brisbane,QLD; Perth,WA; Adelaide,SA; Canberra,ACT; Hobart,TAS; Gold Coast,QLD
    """,
    "Belgium": """
    Bruxelles,BRU; Antwerpen,VAN; Gent,VOV; Liège,WLG
    """,
    "Switzerland": """
    Zürich,ZH; Genève,GE; Basel,BS; Bern,BE
    """,
    "Austria": """
    Wien,W; Graz,ST; Linz,OO
    """,
    "Ireland": """
    Dublin,D; Cork,CO; Galway,G
    """,
}
# Countries in the order the city ranking interleaves them: three US cities, then one from each other country.
COUNTRY_TURNS = ("USA", "USA", "USA", "UK", "Germany", "France", "Spain", "Italy", "Canada", "Netherlands",
                 "Australia", "Belgium", "Switzerland", "Austria", "Ireland")  # fmt: skip
# Phone numbers by country: calling code, whether national numbers are written with a leading 0 (trunk
# prefix), the first digits of the national number, its length, and the ways people write it ('#' is a digit
# of the national number). Mobile ranges the phonenumbers library finds valid (the importer's E.164), though
# not outside North America when written without the calling code: the importer's default region is US.
PHONE_PLANS: dict[str, tuple[str, bool, tuple[str, ...], int, tuple[str, ...]]] = {
    "USA": ("1", False, (), 10, ("(###) ###-####", "###-###-####", "###.###.####", "+1 ### ### ####",
                                 "+1-###-###-####", "##########", "+1##########", "1 (###) ###-####")),
    "Canada": ("1", False, (), 10, ("(###) ###-####", "###-###-####", "+1 ### ### ####", "###.###.####")),
    "UK": ("44", True, ("74", "75", "77", "78", "79"), 10,
           ("0#### ######", "+44 #### ######", "+44 (0)#### ######", "+44##########", "0#### ### ###")),
    "Ireland": ("353", True, ("83", "85", "86", "87", "89"), 9,
                ("0## ### ####", "+353 ## ### ####", "+353#########", "00353 ## ### ####")),
    "Germany": ("49", True, ("151", "152", "157", "159", "160", "170", "171", "175", "176", "177", "178", "179"), 11,
                ("0### ########", "+49 ### ########", "+49 (0)### ########", "0###-########", "+49###########",
                 "0049 ### ########")),
    "Austria": ("43", True, ("650", "660", "664", "676", "680", "681", "688", "699"), 10,
                ("0### #######", "+43 ### #######", "+43##########")),
    "Switzerland": ("41", True, ("76", "77", "78", "79"), 9, ("0## ### ## ##", "+41 ## ### ## ##", "+41#########")),
    "France": ("33", True, ("6", "73", "74", "75", "76", "77", "78", "79"), 9,
               ("0# ## ## ## ##", "0#.##.##.##.##", "+33 # ## ## ## ##", "+33 (0)# ## ## ## ##", "0#########",
                "+33#########", "0033 # ## ## ## ##")),
    "Belgium": ("32", True, ("470", "471", "472", "473", "474", "475", "476", "477", "478", "479", "484", "485",
                             "486", "487", "488", "489", "490", "491", "492", "493", "494", "495", "496", "497",
                             "498", "499"), 9, ("0### ## ## ##", "+32 ### ## ## ##", "+32#########")),
    "Spain": ("34", False, ("6",), 9, ("### ### ###", "+34 ### ## ## ##", "#########", "+34#########",
                                      "0034 ### ### ###")),
    "Italy": ("39", False, ("320", "328", "329", "333", "334", "335", "338", "339", "340", "345", "346", "347",
                            "348", "349", "366", "380", "388", "389", "391", "392", "393"), 10,
              ("### ### ####", "+39 ### ### ####", "+39##########", "###-#######")),
    "Netherlands": ("31", True, ("61", "62", "63", "64", "65"), 9, ("0# ########", "0#-########", "+31 # ########",
                                                                   "+31#########")),
    "Australia": ("61", True, ("40", "41", "42", "43", "46", "48"), 9,
                  ("0### ### ###", "+61 ### ### ###", "+61#########")),
}  # fmt: skip
# Job titles, each with another way of writing it (what "title changed" writes when it can).
TITLE_PAIRS = (
    ("CEO", "Chief Executive Officer"),
    ("CTO", "Chief Technology Officer"),
    ("CFO", "Chief Financial Officer"),
    ("COO", "Chief Operating Officer"),
    ("Head of Sales", "Sales Director"),
    ("VP Sales", "Vice President of Sales"),
    ("Marketing Manager", "Mktg Manager"),
    ("VP Marketing", "Vice President, Marketing"),
    ("Office Manager", "Office Mgr"),
    ("Buyer", "Purchasing Manager"),
    ("Software Engineer", "Software Developer"),
    ("Senior Software Engineer", "Sr. Software Engineer"),
    ("Account Executive", "Account Exec"),
    ("Sales Representative", "Sales Rep"),
    ("HR Manager", "Human Resources Manager"),
    ("Operations Director", "Director of Operations"),
    ("Product Manager", "Product Owner"),
    ("Project Manager", "Project Lead"),
    ("Business Development Manager", "BDM"),
    ("IT Manager", "IT Director"),
    ("Customer Success Manager", "CSM"),
    ("Data Analyst", "Business Analyst"),
    ("Founder", "Co-Founder"),
    ("Owner", "Proprietor"),
    ("Consultant", "Senior Consultant"),
    ("Engineering Manager", "Head of Engineering"),
    ("Financial Controller", "Controller"),
    ("Accountant", "Senior Accountant"),
    ("Managing Director", "MD"),
    ("General Manager", "GM"),
)
INDUSTRIES = (
    "Software", "Retail", "Real Estate", "Logistics", "Healthcare", "Manufacturing", "Finance", "Education",
    "Energy", "Media", "Construction", "Consulting", "Hospitality", "Telecommunications", "Automotive",
    "Food & Beverage", "Legal", "Insurance", "Pharmaceuticals", "Agriculture",
)  # fmt: skip
NOTES = ("met at trade fair", "asked for a demo", "newsletter signup", "called back", "referral from partner",
         "webinar attendee", "downloaded whitepaper")  # fmt: skip
LEAD_SOURCES = ("web", "fair", "referral", "list", "webinar", "partner")
OWNERS = ("ann", "bob", "cid", "dee", "eli")
PERSONAL_DOMAINS = (
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "hotmail.com",
    "icloud.com",
    "aol.com",
    "gmx.de",
    "orange.fr",
)
PERSONAL_WEIGHTS = (0.5, 0.15, 0.12, 0.1, 0.05, 0.03, 0.03, 0.02)
OTHER_TLDS = (".net", ".io", ".co", ".org")
EMAIL_TAGS = ("crm", "news", "work", "leads", "sales", "events")
# Email local parts, by format number, from the ASCII first and last name: f.l, fl... A company uses one.
EMAIL_FORMATS = ("{f}.{l}", "{f0}{l}", "{f}", "{f}{l0}", "{f}_{l}", "{l}.{f}", "{f0}.{l}", "{f}{l}")
COMPANY_FORMAT_WEIGHTS = (0.45, 0.2, 0.05, 0.05, 0.05, 0.05, 0.1, 0.05)
PERSONAL_FORMATS = (0, 7, 4, 1)
# Legal forms and articles, as schema.LEGAL_FORMS lists them, restated for Rust's regex: the longest first,
# since its alternation takes the first that matches where PostgreSQL's takes the longest.
LEGAL_WORDS = (
    r"\b(incorporated|corporation|limited|company|l l c|s a s|s p a|group|gmbh|sarl|inc|llc|ltd|corp|mbh|sas|"
    r"spa|srl|plc|pty|the|and|s a|co|ag|sa|bv|nv|oy|ab|as|kg)\b"
)
# Variations of a true duplicate, with their weights when picking which to apply, and pairs that exclude
# each other.
VARIATIONS = (
    "nickname",
    "initial",
    "typo",
    "accents",
    "case",
    "company_form",
    "email_personal",
    "email_domain",
    "phone_format",
    "phone_dropped",
    "title",
)
VARIATION_WEIGHTS = (1.0, 0.5, 1.0, 1.5, 0.8, 1.2, 0.8, 0.5, 1.0, 0.5, 0.8)
EXCLUSIVE = (("nickname", "initial"), ("email_personal", "email_domain"), ("phone_format", "phone_dropped"))
NAME_VARIATIONS = ("nickname", "initial", "typo", "accents", "case")
# Every label a row's `variations` may hold, in the order it lists them.
LABEL_ORDER = (
    *VARIATIONS[:5],
    "company_form",
    "company_changed",
    "email_personal",
    "email_domain",
    "email_alias",
    "email_tag",
    "email_dots",
    "email_new_company",
    "phone_format",
    "phone_dropped",
    "phone_changed",
    "city_changed",
    "city_dropped",
    "title",
    # what a hard non-duplicate shares with the lead it resembles
    "same_last_name",
    "same_name",
    "same_domain",
    "same_city",
    "same_phone",
    "same_local",
)


# ---------------------------------------------------------------------------------------------- pools


def _zipf(size: int, q: float) -> np.ndarray:
    """Probabilities of ranks 1..size, Zipf-Mandelbrot: p(k) ~ 1 / (k + q); q flattens the head."""
    weights = 1.0 / (np.arange(1, size + 1) + q)
    return weights / weights.sum()


def _fold(text: str) -> str:
    """`text` without accents, lower case (as _ascii, for the pools' few thousand words)."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).lower()


@functools.cache
def _first_names() -> tuple[str, ...]:
    """The first-name pool by rank: the commonest English names, then international ones woven in."""
    names, tail, other = list(ENGLISH_FIRST[:40]), list(ENGLISH_FIRST[40:]), list(INTERNATIONAL_FIRST)
    while tail or other:
        names += tail[:3] + other[:1]
        del tail[:3], other[:1]
    return tuple(dict.fromkeys(names))


@functools.cache
def _surnames() -> tuple[str, ...]:
    """1,000 surnames by rank: the typed ones, then prefix + suffix ones; no two alike once accents are dropped."""
    names: dict[str, str] = {}
    for name in SURNAMES:
        names.setdefault(_fold(name), name)
    combos = [p + s for p in SURNAME_PREFIXES for s in SURNAME_SUFFIXES]
    for i in np.random.default_rng(20_240_601).permutation(len(combos)):
        if len(names) == 1000:
            break
        names.setdefault(_fold(combos[i]), combos[i])
    return tuple(names.values())


@functools.cache
def _cities() -> pl.DataFrame:
    """About 200 cities by rank (city, state, country, area code): countries interleaved, largest first."""
    queues = {
        country: [" ".join(c.split()) for c in cities.split(";")] for country, cities in CITIES_BY_COUNTRY.items()
    }
    rows = []
    while any(queues.values()):
        for country in COUNTRY_TURNS:
            if queues[country]:
                city, state, *area = queues[country].pop(0).split(",")
                rows.append((city, state, country, area[0] if area else ""))
    return pl.DataFrame(rows, schema=["city", "state", "country", "area"], orient="row")


@functools.cache
def _companies() -> pl.DataFrame:
    """5,000 companies by rank: name (with its legal form), key, domain, country, home city, industry, email format."""
    rng = np.random.default_rng(20_240_602)
    words = [f"{a} {b}" for a in COMPANY_WORDS for b in COMPANY_KINDS]
    picked: dict[str, str] = {}
    for i in rng.permutation(len(words)):
        picked.setdefault(_fold(words[i]).replace(" ", ""), words[i])
        if len(picked) == 5000:
            break
    bases = list(picked.values())
    cities = _cities()
    home = rng.choice(cities.height, len(bases), p=_zipf(cities.height, 8))
    countries = cities["country"].gather(home).to_list()
    suffixes = [LEGAL_SUFFIXES[c][rng.integers(len(LEGAL_SUFFIXES[c]))] for c in countries]
    frame = pl.DataFrame(
        {
            "base": bases,
            "suffix": suffixes,
            "country": countries,
            "home": home,
            "industry": _pick(INDUSTRIES, rng.integers(len(INDUSTRIES), size=len(bases))),
            "format": rng.choice(len(EMAIL_FORMATS), len(bases), p=COMPANY_FORMAT_WEIGHTS),
        }
    )
    frame = frame.with_columns(
        name=pl.when(pl.col("suffix") == "").then("base").otherwise(pl.concat_str("base", pl.lit(" "), "suffix")),
        domain=pl.concat_str(
            _ascii(pl.col("base")).str.to_lowercase().str.replace_all(r"[^a-z0-9]", ""),
            pl.col("country").replace_strict(TLD),
        ),
    )
    return frame.with_columns(key=_company_key(pl.col("name")))


@functools.cache
def _company_ids() -> dict[str, int]:
    """Company name -> rank."""
    return {name: i for i, name in enumerate(_companies()["name"])}


@functools.cache
def _form_pairs() -> pl.DataFrame:
    """(name, form): first-name keys that are forms of each other in the nicknames package, both ways."""
    with nicknames.with_names_csv_path() as path:
        pairs = pl.read_csv(path, infer_schema=False)
    pairs = pairs.filter(pl.col("relationship") == "has_nickname").select(name="name1", form="name2")
    both = pl.concat([pairs, pairs.select(name="form", form="name")])
    return both.filter(pl.col("name") != pl.col("form")).unique().sort("name", "form")


@functools.cache
def _form_lists() -> pl.DataFrame:
    """Per first-name key: its forms as people write them (`every`), the common ones (`common`: Bob for Robert,
    Robert for Bob) and the nicknames people commonly go by (`nick`)."""
    known = set(zip(_form_pairs()["name"], _form_pairs()["form"], strict=True))
    common = [
        (f.lower(), n, True) for f, nicks in COMMON_NICKNAMES.items() for n in nicks if (f.lower(), n.lower()) in known
    ]
    common += [
        (n.lower(), f, False) for f, nicks in COMMON_NICKNAMES.items() for n in nicks if (f.lower(), n.lower()) in known
    ]
    by_key = pl.DataFrame(common, schema=["key", "form", "nick"], orient="row").group_by("key")
    every = _form_pairs().select(key="name", form=pl.col("form").str.to_titlecase()).group_by("key").agg(every="form")
    lists = every.join(
        by_key.agg(common=pl.col("form").unique(maintain_order=True), nick=pl.col("form").filter("nick")),
        on="key",
        how="full",
        coalesce=True,
    )
    return lists.sort("key")


# ---------------------------------------------------------------------------------------------- text


def _ascii(text: pl.Expr) -> pl.Expr:
    """Accents dropped: é -> e, ü -> u (NFKD, then the combining marks)."""
    return text.str.normalize("NFKD").str.replace_all(r"\p{M}", "")


def _name_key(name: pl.Expr) -> pl.Expr:
    """A name as the nicknames package and the conflict checks compare them: without accents, lower case."""
    return _ascii(name).str.to_lowercase().str.strip_chars(" .")


def _email_part(name: pl.Expr) -> pl.Expr:
    """A name as email addresses write it: ASCII letters, lower case (O'Brien -> obrien)."""
    return _ascii(name).str.to_lowercase().str.replace_all(r"[^a-z]", "")


def _company_key(company: pl.Expr) -> pl.Expr:
    """A company's name without legal forms, articles, case, accents, punctuation or spaces (schema's
    lead_company_key): "ACME Inc." = "Acme Incorporated" = "acme"."""
    fuzzy = _ascii(company).str.to_lowercase().str.replace_all(r"[^a-z0-9]+", " ").str.strip_chars()
    return fuzzy.str.replace_all(LEGAL_WORDS, "").str.replace_all(" ", "")


def _local_key(email: pl.Expr) -> pl.Expr:
    """An email's local part as corroboration compares it (schema's lead_email_local): lower case, without its
    +tag and its punctuation: bob.smith+crm@x = bobsmith@y."""
    return email.str.to_lowercase().str.extract(r"^([^@+]*)", 1).str.replace_all(r"[^a-z0-9]", "")


def _phone_key(phone: pl.Expr) -> pl.Expr:
    """A phone's last nine digits (schema's lead_phone_digits): the same number however it is written."""
    digits = phone.str.replace_all(r"[^0-9]", "")
    return pl.when(digits.str.len_chars() >= 7).then(digits.str.tail(9))


def _local(first: pl.Expr, last: pl.Expr, fmt: pl.Expr) -> pl.Expr:
    """The email local part of format `fmt` (EMAIL_FORMATS) for these names."""
    return _local_of(_email_part(first), _email_part(last), fmt)


def _local_of(f: pl.Expr, l: pl.Expr, fmt: pl.Expr) -> pl.Expr:  # noqa: E741
    """The email local part of format `fmt` for names already as email addresses write them (_email_part)."""
    parts = {"f": f, "l": l, "f0": f.str.head(1), "l0": l.str.head(1)}
    out = pl.lit(None, pl.String)
    for i, template in enumerate(EMAIL_FORMATS):
        # "{f}.{l}" -> ["", "f", ".", "l", ""]: odd positions name a part, even ones are literal text
        pieces = [parts[p] if j % 2 else pl.lit(p) for j, p in enumerate(template.replace("}", "{").split("{"))]
        out = pl.when(fmt == i).then(pl.concat_str(pieces)).otherwise(out)
    return out


def _pick(values: tuple[str, ...] | list[str], index: np.ndarray) -> pl.Series:
    """values[index], as a Series."""
    return pl.Series(list(values), dtype=pl.String).gather(index)


def _get(values: pl.Series | tuple[str, ...], index: pl.Expr) -> pl.Expr:
    """values[index] for each row."""
    return pl.lit(pl.Series(values) if isinstance(values, tuple) else values).get(index)


def _random(rng: np.random.Generator, n: int, *names: str) -> dict[str, pl.Series]:
    """Columns of random integers in [0, 2**30), one per name, for expressions to take choices from."""
    return {name: pl.Series(rng.integers(0, 1 << 30, n)) for name in names}


# ---------------------------------------------------------------------------------------------- phones


@functools.cache
def _templates() -> dict[str, list[tuple[str, str]]]:
    """Per country, each way of writing its numbers as (regular expression over the national number, replacement)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for country, (_, _, _, length, formats) in PHONE_PLANS.items():
        out[country] = []
        for written in formats:
            runs = re.findall(r"#+|[^#]+", written)
            digits = [len(r) for r in runs if r[0] == "#"]
            assert sum(digits) == length, written
            groups = iter(range(1, len(digits) + 1))
            replacement = "".join("${" + str(next(groups)) + "}" if r[0] == "#" else r for r in runs)
            out[country].append(("^" + "".join(rf"(\d{{{d}}})" for d in digits) + "$", replacement))
    return out


def _national_numbers(rng: np.random.Generator, city: np.ndarray) -> pl.Series:
    """A new mobile number (national significant number) for each lead, of its city's country."""
    cities = _cities()
    country = cities["country"].gather(city).to_numpy()
    area = cities["area"].gather(city).to_numpy()
    out = np.empty(len(city), dtype=object)
    for name in sorted(PHONE_PLANS):
        where = np.flatnonzero(country == name)
        if not len(where):
            continue
        _, _, prefixes, length, _ = PHONE_PLANS[name]
        digits = (rng.integers(0, 10, (len(where), length), dtype=np.uint8) + ord("0")).view(f"S{length}")[:, 0]
        number = pl.Series(digits).cast(pl.Binary).cast(pl.String)
        if prefixes:
            start = _pick(prefixes, rng.integers(len(prefixes), size=len(where)))
        else:
            # North America: the city's area code, then an exchange that is neither N11 nor the fictional 555.
            exchange = rng.integers(200, 1000, size=len(where))
            exchange = np.where(exchange % 100 == 11, exchange + 1, exchange)
            exchange = np.where(exchange == 555, 556, exchange)
            start = pl.Series(area[where], dtype=pl.String) + pl.Series(exchange).cast(pl.String)
        frame = pl.DataFrame({"start": start, "number": number})
        out[where] = (
            frame.select(pl.concat_str("start", pl.col("number").str.slice(pl.col("start").str.len_chars())))
            .to_series()
            .to_numpy()
        )
    return pl.Series(out, dtype=pl.String)


def _write_phones(nsn: pl.Series, country: pl.Series, choice: np.ndarray) -> pl.Series:
    """Each national number written in one of its country's ways (`choice` picks which; null stays null)."""
    templates = _templates()
    counts = {c: len(t) for c, t in templates.items()}
    frame = pl.DataFrame({"nsn": nsn, "country": country, "choice": choice}).with_row_index("i")
    frame = frame.filter(pl.col("nsn").is_not_null()).with_columns(
        k=pl.col("choice") % pl.col("country").replace_strict(counts, return_dtype=pl.Int64)
    )
    written = [
        part.select("i", pl.col("nsn").str.replace(*templates[str(c)][int(k)]))
        for (c, k), part in frame.partition_by("country", "k", as_dict=True).items()
    ]
    phones = pl.concat(written) if written else pl.DataFrame(schema={"i": pl.UInt32, "nsn": pl.String})
    out = pl.DataFrame({"i": pl.Series(np.arange(len(nsn)), dtype=pl.UInt32)}).join(phones, on="i", how="left")
    return out.sort("i")["nsn"].alias("Phone")


def _national_of(phone: pl.Expr, country: pl.Expr) -> pl.Expr:
    """The national number a phone was written from, for its lead's country (what _write_phones was given)."""
    code = country.replace_strict({c: p[0] for c, p in PHONE_PLANS.items()}, default=None, return_dtype=pl.String)
    trunk = country.replace_strict({c: p[1] for c, p in PHONE_PLANS.items()}, default=False, return_dtype=pl.Boolean)
    digits = phone.str.replace_all(r"[^0-9]", "")
    digits = (
        pl.when(phone.str.starts_with("+"))
        .then(digits.str.slice(code.str.len_chars()))
        .when(phone.str.starts_with("00"))
        .then(digits.str.slice(code.str.len_chars() + 2))
        .when((code == "1") & (digits.str.len_chars() == 11) & digits.str.starts_with("1"))
        .then(digits.str.slice(1))
        .otherwise(digits)
    )
    return pl.when(trunk & digits.str.starts_with("0")).then(digits.str.slice(1)).otherwise(digits)


# ---------------------------------------------------------------------------------------------- people


def _mapped(values: pl.Series, fn: Callable[[pl.Expr], pl.Expr]) -> pl.Series:
    """`fn` of each value, computed once per distinct value (names and companies repeat a lot)."""
    distinct = values.unique().drop_nulls()
    table = pl.DataFrame({"v": distinct}).select("v", fn(pl.col("v")).alias("out"))
    return values.replace_strict(table["v"], table["out"], default=None, return_dtype=table["out"].dtype)


def _hashed(key: pl.Series) -> pl.Series:
    """A 64-bit hash of each key: conflict checks join millions of rows, faster on integers than on text."""
    return key.hash(seed=0)


def _keys(people: pl.DataFrame) -> pl.DataFrame:
    """Conflict keys (first, last, company: hashed) of people with First Name, Last Name and Company Name."""
    return pl.DataFrame(
        {
            "first": _hashed(_mapped(people["First Name"], _name_key)),
            "last": _hashed(_mapped(people["Last Name"], _name_key)),
            "company": _hashed(_mapped(people["Company Name"], _company_key)),
        }
    )


@functools.cache
def _hashed_forms() -> pl.DataFrame:
    """_form_pairs hashed as _keys hashes first names."""
    pairs = _form_pairs()
    return pl.DataFrame({"name": _hashed(pairs["name"]), "form": _hashed(pairs["form"])})


def _conflicts(keys: pl.DataFrame, against: pl.DataFrame | None, rows: np.ndarray | None = None) -> np.ndarray:
    """Which rows of `keys` (_keys) name someone of `against` or, with against None, someone an earlier row names:
    the same last name at the same company, and first names equal or forms of each other (Bob ~ Robert). Only
    rows `rows`, and (against None) the rows that share a last name and company with them, are looked at."""
    keys = keys.with_row_index("i").with_columns(pl.col("i").cast(pl.Int64))
    near = keys if rows is None else keys[rows]
    if against is None:
        if rows is not None:
            near = keys.join(near.select("last", "company").unique(), on=["last", "company"], how="semi")
        # Only rows sharing a last name and a company with another can conflict: a small share of them.
        near = near.filter(pl.len().over("last", "company") > 1)
        target = near.select(pl.col("i").alias("j"), "first", "last", "company")
    else:
        target = against.select("first", "last", "company").unique().with_columns(j=pl.lit(-1, pl.Int64))
        near = near.join(target.select("last", "company").unique(), on=["last", "company"], how="semi")
    spelled = pl.concat(
        [
            near.select("i", pl.col("first").alias("form"), "last", "company"),
            near.join(_hashed_forms(), left_on="first", right_on="name").select("i", "form", "last", "company"),
        ]
    )
    hits = spelled.join(target, left_on=["form", "last", "company"], right_on=["first", "last", "company"])
    if against is None:
        hits = hits.filter(pl.col("j") < pl.col("i"))
    bad = np.zeros(keys.height, dtype=bool)
    bad[hits["i"].unique().to_numpy()] = True
    return bad


def _related(first: pl.Series, other: pl.Series) -> np.ndarray:
    """Whether each pair of first names is the same name or forms of each other (keys compared)."""
    pairs = pl.DataFrame({"name": first, "form": other}).select(
        _name_key(pl.col("name")).alias("name"), _name_key(pl.col("form")).alias("form")
    )
    known = pairs.with_row_index("i").join(_form_pairs(), on=["name", "form"], how="semi")["i"].to_numpy()
    out = (pairs["name"] == pairs["form"]).fill_null(False).to_numpy()
    out[known] = True
    return out


def _draw_first(rng: np.random.Generator, n: int) -> pl.Series:
    """First names as a CRM holds them: by rank; 8% by their usual nickname; 15% of accented ones in ASCII."""
    pool = _first_names()
    first = _pick(pool, rng.choice(len(pool), n, p=_zipf(len(pool), 10))).alias("first")
    known = _form_lists().select("key", "nick").filter(pl.col("nick").list.len() > 0)
    keys = _mapped(first, _name_key).alias("key").to_frame()
    nicks = keys.join(known, on="key", how="left", maintain_order="left")["nick"]
    count = nicks.list.len().fill_null(0)
    index = pl.Series((rng.random(n) * np.maximum(count.to_numpy(), 1)).astype(np.int64))
    use = pl.Series(rng.random(n) < 0.08) & (count > 0)
    nick = pl.select(pl.lit(nicks).list.get(pl.lit(index), null_on_oob=True)).to_series()
    return _sometimes_ascii(pl.select(pl.when(use).then(nick).otherwise(first)).to_series(), rng.random(n) < 0.15)


def _sometimes_ascii(names: pl.Series, which: np.ndarray) -> pl.Series:
    """The names of rows `which` written without their accents, as systems without them write them."""
    return pl.select(pl.when(pl.Series(which)).then(_mapped(names, _ascii)).otherwise(names)).to_series()


def _draw_people(rng: np.random.Generator, n: int) -> pl.DataFrame:
    """Company (by rank), first and last name of `n` people."""
    companies, surnames = _companies(), _surnames()
    company = rng.choice(companies.height, n, p=_zipf(companies.height, 20))
    last = _pick(surnames, rng.choice(len(surnames), n, p=_zipf(len(surnames), 25)))
    return pl.DataFrame(
        {
            "_company": company,
            "Company Name": companies["name"].gather(company),
            "First Name": _draw_first(rng, n),
            "Last Name": _sometimes_ascii(last, rng.random(n) < 0.15),
        }
    )


def _separate(
    rng: np.random.Generator,
    people: pl.DataFrame,
    against: pl.DataFrame | None,
    by_company: np.ndarray | None = None,
    same_company: np.ndarray | None = None,
    avoid_first: pl.Series | None = None,
) -> pl.DataFrame:
    """`people` (_company, Company Name, First Name, Last Name) made distinct from `against` (_keys) and from each
    other, by new first names (or, rows of `by_company` and, after ten rounds, any but those of `same_company`, new
    companies); the first name of a row is never `avoid_first`'s, nor a form of it."""
    companies = _companies()
    none = np.zeros(people.height, dtype=bool)
    by_company = none if by_company is None else by_company
    same_company = none if same_company is None else same_company
    keys, changed = _keys(people), None
    for attempt in range(100):
        # After the first round, only the rows drawn again (and those beside them) can conflict.
        bad = _conflicts(keys, None, changed)
        if against is not None:
            bad |= _conflicts(keys, against, changed)
        if avoid_first is not None:
            bad |= _related(people["First Name"], avoid_first)
        if not bad.any():
            return people
        changed = np.flatnonzero(bad)
        company = (by_company[changed] | (attempt >= 10)) & ~same_company[changed]
        fresh = _draw_people(rng, len(changed))
        first = np.where(company, people["First Name"].gather(changed).to_numpy(), fresh["First Name"].to_numpy())
        rank = np.where(company, fresh["_company"].to_numpy(), people["_company"].gather(changed).to_numpy())
        people = people.with_columns(
            people["First Name"].scatter(changed, pl.Series(first, dtype=pl.String)),
            people["_company"].scatter(changed, pl.Series(rank)),
            people["Company Name"].scatter(changed, companies["name"].gather(rank)),
        )
        redrawn = _keys(people[changed])
        keys = keys.with_columns(keys[c].scatter(changed, redrawn[c]) for c in keys.columns)
    raise RuntimeError("could not make the generated people distinct")


def _fill(rng: np.random.Generator, people: pl.DataFrame, external_ids: pl.Series) -> pl.DataFrame:
    """The other columns of `people` (_company, Company Name, First Name, Last Name): email, phone, city..."""
    n = people.height
    companies, cities = _companies(), _cities()
    company = companies[people["_company"].to_numpy()]
    # Most people work in their company's home city; the others anywhere.
    anywhere = rng.choice(cities.height, n, p=_zipf(cities.height, 8))
    city = np.where(rng.random(n) < 0.7, company["home"].to_numpy(), anywhere)
    here = cities[city]
    phone = _write_phones(_national_numbers(rng, city), here["country"], rng.integers(0, 1 << 30, n))
    personal = rng.random(n) < 0.15
    fmt = np.where(personal, np.array(PERSONAL_FORMATS)[rng.integers(len(PERSONAL_FORMATS), size=n)], company["format"])
    digits = pl.Series(rng.integers(1, 100, n)).cast(pl.String)
    personal_domain = _pick(PERSONAL_DOMAINS, rng.choice(len(PERSONAL_DOMAINS), n, p=PERSONAL_WEIGHTS))
    titles = [t for pair in TITLE_PAIRS for t in pair]
    empty_city = pl.Series(rng.random(n) < 0.1)
    is_personal = pl.Series(personal)
    parts = {"_f": _mapped(people["First Name"], _email_part), "_l": _mapped(people["Last Name"], _email_part)}
    return people.with_columns(**parts).select(
        "_company",
        "Company Name",
        "First Name",
        "Last Name",
        pl.concat_str(
            _local_of(pl.col("_f"), pl.col("_l"), pl.lit(pl.Series(fmt))),
            pl.when(is_personal & pl.Series(rng.random(n) < 0.5)).then(digits).otherwise(pl.lit("")),
            pl.lit("@"),
            pl.when(is_personal).then(personal_domain).otherwise(company["domain"]),
        ).alias("Email"),
        pl.when(pl.Series(rng.random(n) < 0.3)).then(None).otherwise(phone).alias("Phone"),
        pl.when(pl.Series(rng.random(n) < 0.08))
        .then(None)
        .otherwise(_pick(titles, rng.choice(len(titles), n, p=_zipf(len(titles), 5))))
        .alias("Title"),
        company["industry"].alias("Industry"),
        pl.concat_str(pl.lit("https://www."), company["domain"]).alias("Website"),
        pl.when(empty_city).then(None).otherwise(here["city"]).alias("City"),
        pl.when(empty_city).then(None).otherwise(here["state"]).alias("State"),
        here["country"].alias("Country"),
        external_ids.alias("External ID"),
        pl.when(pl.Series(rng.random(n) < 0.75))
        .then(None)
        .otherwise(_pick(NOTES, rng.integers(len(NOTES), size=n)))
        .alias("Notes"),
        _pick(LEAD_SOURCES, rng.integers(len(LEAD_SOURCES), size=n)).alias("Lead Source"),
        _pick(OWNERS, rng.integers(len(OWNERS), size=n)).alias("Owner"),
    )


def _unique_emails(
    email: pl.Series, taken: pl.Series | None, keep_local: pl.Series | None = None, avoid_local: pl.Series | None = None
) -> pl.Series:
    """`email` numbered where it repeats an earlier row's or one of `taken` (lower case): john.smith2@...; rows of
    `keep_local` as a +tag (john.smith+2@..., john.smith+crm2@...), which leaves the local part as compared; and
    never to a local part (_local_key) of `avoid_local`."""
    keep = keep_local if keep_local is not None else pl.Series([False] * email.len())
    avoid = avoid_local if avoid_local is not None else pl.Series([None] * email.len(), dtype=pl.String)
    frame = pl.DataFrame({"email": email, "keep": keep, "avoid": avoid}).with_columns(
        local=pl.col("email").str.extract(r"^(.*)@", 1),
        domain=pl.col("email").str.extract(r"@(.*)$", 1),
        lower=pl.col("email").str.to_lowercase(),
    )
    frame = frame.with_columns(base=pl.col("lower"))
    taken_lower = taken.str.to_lowercase().implode() if taken is not None else None
    offset = 1
    for _ in range(100):
        clash = ~pl.col("lower").is_first_distinct() | (_local_key(pl.col("lower")) == pl.col("avoid")).fill_null(False)
        if taken_lower is not None:
            clash = clash | pl.col("lower").is_in(taken_lower)
        rows = np.flatnonzero(frame.select(clash).to_series().to_numpy())
        if not len(rows):
            return frame["email"].alias(email.name)
        # Each clashing row gets its own number (its rank among those of the same address), larger every round.
        numbered = frame[rows].with_columns(n=pl.col("base").cum_count().over("base") + offset)
        plus = pl.when(pl.col("keep") & ~pl.col("local").str.contains("+", literal=True)).then(pl.lit("+"))
        renumbered = numbered.select(
            pl.concat_str("local", plus.otherwise(pl.lit("")), pl.col("n").cast(pl.String), pl.lit("@"), "domain")
        ).to_series()
        frame = frame.with_columns(
            frame["email"].scatter(rows, renumbered), frame["lower"].scatter(rows, renumbered.str.to_lowercase())
        )
        offset = int(numbered["n"].max() or 0)  # type: ignore[arg-type]
    raise RuntimeError("could not make the generated emails unique")


def existing_leads(rows: int, seed: int) -> pl.DataFrame:
    """`rows` distinct people as a CRM holds them, with bench/generate.py's headers; emails unique."""
    rng = np.random.default_rng([seed, 1])
    people = _separate(rng, _draw_people(rng, rows), None)
    ids = pl.select(pl.format("E{}-{}", pl.lit(seed), pl.int_range(rows, dtype=pl.Int64))).to_series()
    filled = _fill(rng, people, ids)
    return filled.with_columns(_unique_emails(filled["Email"], None)).select(HEADERS)


# ---------------------------------------------------------------------------------------------- duplicates


def _choose(rng: np.random.Generator, applicable: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Which VARIATIONS each row gets: up to k[row] applicable ones, drawn with VARIATION_WEIGHTS, never both
    of an EXCLUSIVE pair."""
    n, v = applicable.shape
    # Efraimidis-Spirakis: sorting by u ** (1 / w) draws weighted, without replacement.
    order = np.argsort(-(rng.random((n, v)) ** (1 / np.array(VARIATION_WEIGHTS))), axis=1)
    partner = np.arange(v)
    for a, b in EXCLUSIVE:
        partner[VARIATIONS.index(a)], partner[VARIATIONS.index(b)] = VARIATIONS.index(b), VARIATIONS.index(a)
    chosen = np.zeros((n, v), dtype=bool)
    rows = np.arange(n)
    for rank in range(v):
        col = order[:, rank]
        take = applicable[rows, col] & ~chosen[rows, partner[col]] & (chosen.sum(axis=1) < k)
        chosen[rows[take], col[take]] = True
    return chosen


def _other_form(u: pl.Expr, pick: pl.Expr) -> pl.Expr:
    """Another form of the first name (Robert -> Bob, Bob -> Robert): a common one 75% of the time when it has one,
    else any the nicknames package has; null if none. Reads the `common` and `every` lists of _form_lists."""
    common, every = pl.col("common").list.len().fill_null(0), pl.col("every").list.len().fill_null(0)
    use_common = (common > 0) & (u < 0.75)
    index = (pick % pl.when(use_common).then(common).otherwise(every).clip(lower_bound=1)).cast(pl.Int64)
    return (
        pl.when(use_common)
        .then(pl.col("common").list.get(index, null_on_oob=True))
        .otherwise(pl.col("every").list.get(index, null_on_oob=True))
    )


def _accents(name: pl.Expr) -> pl.Expr:
    """The name with its accents stripped (Müller -> Muller), or added when it is a known name without them."""
    return pl.when(name != _ascii(name)).then(_ascii(name)).otherwise(name.replace_strict(ACCENTED, default=name))


def _typo(name: pl.Expr, op: pl.Expr, at: pl.Expr, letter: pl.Expr) -> pl.Expr:
    """One typing error after the first letter: op 0 deletes a letter, 1 inserts one, 2 substitutes one, 3 swaps
    two (substitutes when they are the same letter)."""
    size = name.str.len_chars()
    p = 1 + at % (size - 1)  # 1..size-1
    t = 1 + at % (size - 2)  # 1..size-2: the letter and the next one swap
    here, there = name.str.slice(t, 1), name.str.slice(t + 1, 1)
    current = name.str.slice(p, 1).str.to_lowercase()
    other = pl.when(letter != current).then(letter).when(current != "e").then(pl.lit("e")).otherwise(pl.lit("a"))
    return (
        pl.when(op == 0)
        .then(pl.concat_str(name.str.slice(0, p), name.str.slice(p + 1)))
        .when(op == 1)
        .then(pl.concat_str(name.str.slice(0, p), letter, name.str.slice(p)))
        .when((op == 3) & (here.str.to_lowercase() != there.str.to_lowercase()))
        .then(pl.concat_str(name.str.slice(0, t), there, here, name.str.slice(t + 2)))
        .otherwise(pl.concat_str(name.str.slice(0, p), other, name.str.slice(p + 1)))
    )


def _company_variant(company: pl.Expr, option: pl.Expr, alt: pl.Expr) -> pl.Expr:
    """The same company written otherwise: option 0 drops (or adds) the legal form, 1 writes it another way, 2
    changes the punctuation, 3 the case; `alt` (0 or 1) picks among the alternatives."""
    pattern = (
        r"^(.*?)(?:,?\s+(Incorporated|Corporation|Limited|Inc\.|Inc|LLC|Ltd|Corp|GmbH|SAS|S\.A\.|SA|PLC|BV|Co\.))?$"
    )
    base, suffix = company.str.extract(pattern, 1), company.str.extract(pattern, 2)
    has = suffix.is_not_null()
    forms = [suffix.replace_strict({k: v[i] for k, v in SUFFIX_FORMS.items()}, default=suffix) for i in (0, 1)]
    added = pl.concat_str(base, pl.when(alt == 0).then(pl.lit(" Inc.")).otherwise(pl.lit(" Ltd")))
    dropped = pl.when(has).then(base).otherwise(added)
    variant = (
        pl.when(option == 0)
        .then(dropped)
        .when((option == 1) & has)
        .then(pl.concat_str(base, pl.lit(" "), pl.when(alt == 0).then(forms[0]).otherwise(forms[1])))
        .when(option == 1)
        .then(pl.concat_str(pl.lit("The "), base))
        .when((option == 2) & has)
        .then(pl.concat_str(base, pl.lit(", "), suffix))
        .when(option == 2)
        .then(base.str.replace(" ", "-", literal=True))
        .when(alt == 0)
        .then(company.str.to_uppercase())
        .otherwise(base.str.to_lowercase())
    )
    # A variant that happens to be the original (a name already in capitals, made capitals): drop the legal form.
    return pl.when(variant == company).then(dropped).otherwise(variant)


def _other_title(title: pl.Expr, pick: pl.Expr) -> pl.Expr:
    """The title written another way when it has one (CEO -> Chief Executive Officer), else another title."""
    pool = tuple(t for pair in TITLE_PAIRS for t in pair)
    synonyms = dict(TITLE_PAIRS) | {b: a for a, b in TITLE_PAIRS}
    drawn = _get(pool, pick % len(pool))
    drawn = pl.when(drawn == title).then(_get(pool, (pick + 1) % len(pool))).otherwise(drawn)
    synonym = title.replace_strict(synonyms, default=None, return_dtype=pl.String)
    return pl.when(synonym.is_not_null() & (pick % 3 > 0)).then(synonym).otherwise(drawn)


def _new_domain(domain: pl.Expr, pick: pl.Expr) -> pl.Expr:
    """Another domain for the same local part: another personal provider, or the company's name under another
    top-level domain (acmesystems.com -> acmesystems.io)."""
    provider = _get(PERSONAL_DOMAINS, pick % len(PERSONAL_DOMAINS))
    provider = (
        pl.when(provider == domain).then(_get(PERSONAL_DOMAINS, (pick + 1) % len(PERSONAL_DOMAINS))).otherwise(provider)
    )
    name = domain.str.extract(r"^([^.]+)", 1)
    tld = pl.concat_str(name, _get(OTHER_TLDS, pick % len(OTHER_TLDS)))
    tld = (
        pl.when(tld == domain).then(pl.concat_str(name, _get(OTHER_TLDS, (pick + 1) % len(OTHER_TLDS)))).otherwise(tld)
    )
    return pl.when(domain.is_in(list(PERSONAL_DOMAINS))).then(provider).otherwise(tld)


def _plan(rng: np.random.Generator, originals: pl.DataFrame, hard: np.ndarray) -> pl.DataFrame:
    """`originals` with what each duplicate will change: _v_<variation> flags and, for rows `hard`, which single
    corroborating field stays (the person moved on from the others: another company, phone, city, address)."""
    n = originals.height
    frame = (
        originals.join(
            _form_lists().select("key", "common", "every"),
            left_on=_name_key(pl.col("First Name")),
            right_on="key",
            how="left",
            maintain_order="left",
        )
        .with_columns(
            **_random(rng, n, *(f"_r{i}" for i in range(1, 9))),
            **{f"_u{i}": pl.Series(rng.random(n)) for i in range(1, 4)},
            _hard=pl.Series(hard),
            _first0="First Name",
            _last0="Last Name",
            _phone0="Phone",
            _country0="Country",
            _local=pl.col("Email").str.extract(r"^(.*)@", 1),
            _domain=pl.col("Email").str.extract(r"@(.*)$", 1),
        )
        .with_columns(_personal=pl.col("_domain").is_in(list(PERSONAL_DOMAINS)))
    )

    def column(expr: pl.Expr) -> np.ndarray:
        return frame.select(expr.fill_null(False)).to_series().to_numpy()

    has_phone, has_city = column(pl.col("Phone").is_not_null()), column(pl.col("City").is_not_null())
    applicable = np.ones((n, len(VARIATIONS)), dtype=bool)
    applicable[:, VARIATIONS.index("nickname")] = column(pl.col("every").list.len() > 0)
    applicable[:, VARIATIONS.index("typo")] = column(pl.col("Last Name").str.len_chars() >= 4)
    applicable[:, VARIATIONS.index("accents")] = column(
        (_accents(pl.col("First Name")) != pl.col("First Name"))
        | (_accents(pl.col("Last Name")) != pl.col("Last Name"))
    )
    applicable[:, VARIATIONS.index("email_personal")] = column(~pl.col("_personal") | pl.col("Website").is_not_null())
    applicable[:, VARIATIONS.index("phone_format")] = has_phone
    applicable[:, VARIATIONS.index("phone_dropped")] = has_phone
    # Hard rows: at most one variation, of the name; what else changes comes from moving on.
    applicable[hard] &= np.isin(np.array(VARIATIONS), NAME_VARIATIONS)
    k = np.where(hard, rng.integers(0, 2, n), rng.choice([1, 2, 3], n, p=[0.4, 0.4, 0.2]))
    chosen = _choose(rng, applicable, k)
    v = {name: chosen[:, i] for i, name in enumerate(VARIATIONS)}

    # Hard rows keep one field, drawn among those they have.
    has = np.stack([np.ones(n), has_phone, np.ones(n), has_city], axis=1)
    kept = np.where(hard, np.array(["company", "phone", "local", "city"])[np.argmax(rng.random((n, 4)) * has, 1)], "")
    # The others keep the company, and the city or the phone when they have them; when that is not two, the
    # phone stays (written otherwise) rather than dropped, or else the email's local part stays.
    weak = ~hard & (1 + has_city + (has_phone & ~v["phone_dropped"]) < 2)
    undrop = weak & has_phone & v["phone_dropped"]
    v["phone_dropped"] &= ~undrop
    v["phone_format"] |= undrop
    weak &= ~undrop
    u = rng.random(n)
    phone_broken, city_broken = hard & (kept != "phone") & has_phone, hard & (kept != "city") & has_city
    return frame.with_columns(
        **{f"_v_{name}": pl.Series(flags) for name, flags in v.items()},
        _keep_local=pl.Series(weak | (kept == "local")),
        _break_local=pl.Series(hard & (kept != "local")),
        _company_changed=pl.Series(hard & (kept != "company")),
        _company_form_hard=pl.Series((kept == "company") & (rng.random(n) < 0.5)),
        _phone_dropped_hard=pl.Series(phone_broken & (u < 0.5)),
        _phone_changed=pl.Series(phone_broken & (u >= 0.5)),
        _phone_format_hard=pl.Series((kept == "phone") & (u < 0.5)),
        _city_dropped=pl.Series(city_broken & (u < 0.3)),
        _city_changed=pl.Series(city_broken & (u >= 0.3)),
    )


def _vary_names(frame: pl.DataFrame) -> pl.DataFrame:
    """Names, in this order: another form of the first name or its initial, accents, a typo, case. A `_did_`
    flag for each that changed something; a duplicate with nothing else gets its last name in capitals."""
    first, last = pl.col("First Name"), pl.col("Last Name")
    head = first.str.head(1).str.to_uppercase()
    initial = pl.when(pl.col("_r1") % 2 == 0).then(pl.concat_str(head, pl.lit("."))).otherwise(head)  # R. or R
    first_kept = ~pl.col("_v_nickname") & ~pl.col("_v_initial")
    frame = frame.with_columns(
        pl.when("_v_nickname")
        .then(_other_form(pl.col("_u1"), pl.col("_r2")))
        .when("_v_initial")
        .then(initial)
        .otherwise(first)
        .alias("First Name")
    )
    frame = frame.with_columns(_firstn=first)
    frame = frame.with_columns(
        pl.when(pl.col("_v_accents") & first_kept).then(_accents(first)).otherwise(first).alias("First Name"),
        pl.when("_v_accents").then(_accents(last)).otherwise(last).alias("Last Name"),
    )
    frame = frame.with_columns(_first1=first, _last1=last)
    letter = _get(tuple("abcdefghijklmnopqrstuvwxyz"), pl.col("_r4") % 26)
    typo = _typo(last, pl.col("_r3") % 4, pl.col("_r4") // 26, letter)
    frame = frame.with_columns(pl.when("_v_typo").then(typo).otherwise(last).alias("Last Name"))
    frame = frame.with_columns(_last2=last)
    case = pl.col("_r3") // 4 % 4  # 0: SMITH; 1: JOHN SMITH; 2: john smith; 3: smith
    frame = frame.with_columns(
        pl.when(pl.col("_v_case") & (case == 1))
        .then(first.str.to_uppercase())
        .when(pl.col("_v_case") & (case == 2))
        .then(first.str.to_lowercase())
        .otherwise(first)
        .alias("First Name"),
        pl.when(pl.col("_v_case") & (case <= 1))
        .then(last.str.to_uppercase())
        .when("_v_case")
        .then(last.str.to_lowercase())
        .otherwise(last)
        .alias("Last Name"),
    )
    frame = frame.with_columns(
        _did_nickname=pl.col("_v_nickname") & (pl.col("_firstn") != pl.col("_first0")).fill_null(False),
        _did_initial=pl.col("_v_initial"),
        _did_accents=pl.col("_v_accents")
        & ((pl.col("_first1") != pl.col("_firstn")) | (pl.col("_last1") != pl.col("_last0"))),
        _did_typo=pl.col("_v_typo") & (pl.col("_last2") != pl.col("_last1")),
        _did_case=pl.col("_v_case") & ((last != pl.col("_last2")) | (first != pl.col("_first1"))),
    )
    others = [f"_v_{name}" for name in VARIATIONS if name not in NAME_VARIATIONS]
    nothing = ~pl.any_horizontal(f"_did_{name}" for name in NAME_VARIATIONS) & ~pl.any_horizontal(others)
    nothing = nothing & ~pl.col("_hard")
    return frame.with_columns(
        pl.when(nothing).then(last.str.to_uppercase()).otherwise(last).alias("Last Name"),
        _did_case=pl.col("_did_case") | nothing,
    )


def _vary_company(rng: np.random.Generator, frame: pl.DataFrame) -> pl.DataFrame:
    """The company written otherwise; hard rows that keep something else work for another company now."""
    companies = _companies()
    rank = pl.Series(rng.choice(companies.height, frame.height, p=_zipf(companies.height, 20)))
    same = _get(companies["key"], pl.lit(rank)) == _company_key(pl.col("Company Name"))
    frame = frame.with_columns(_new_company=pl.when(same).then((rank + 1) % companies.height).otherwise(rank))
    new = pl.col("_new_company")
    written = _company_variant(pl.col("Company Name"), pl.col("_r5") % 4, pl.col("_r5") // 4 % 2)
    return frame.with_columns(
        pl.when("_company_changed")
        .then(_get(companies["name"], new))
        .when(pl.col("_v_company_form") | pl.col("_company_form_hard"))
        .then(written)
        .otherwise("Company Name")
        .alias("Company Name"),
        pl.when("_company_changed")
        .then(pl.concat_str(pl.lit("https://www."), _get(companies["domain"], new)))
        .otherwise("Website")
        .alias("Website"),
        pl.when("_company_changed").then(_get(companies["industry"], new)).otherwise("Industry").alias("Industry"),
        _new_domain_of_company=_get(companies["domain"], new),
        _new_format=_get(companies["format"].cast(pl.Int64), new),
    )


def _city_ranks(city: pl.Series, country: pl.Series) -> np.ndarray:
    """The rank of each city (in its country), or of its country's largest city when it has none."""
    cities = _cities().with_row_index("rank").select(pl.col("rank").cast(pl.Int64), "city", "country")
    largest = cities.group_by("country").agg(pl.col("rank").min().alias("largest"))
    frame = pl.DataFrame({"city": city, "country": country})
    found = frame.join(
        cities.unique(["city", "country"], keep="first"), on=["city", "country"], how="left", maintain_order="left"
    )
    found = found.join(largest, on="country", how="left", maintain_order="left")
    return found.select(pl.col("rank").fill_null(pl.col("largest"))).to_series().to_numpy()


def _vary_phone(rng: np.random.Generator, frame: pl.DataFrame) -> pl.DataFrame:
    """The phone's digits written otherwise, or dropped; hard rows that keep something else have a new number (of
    the city they are in now: after _vary_city)."""
    n = frame.height
    nsn = frame.select(_national_of(pl.col("_phone0"), pl.col("_country0"))).to_series()
    # Two draws: the first that is not the phone as it was written.
    once, twice = (_write_phones(nsn, frame["_country0"], rng.integers(0, 1 << 30, n)) for _ in range(2))
    city = _city_ranks(frame["City"], frame["Country"])
    fresh = _write_phones(_national_numbers(rng, city), frame["Country"], rng.integers(0, 1 << 30, n))
    frame = frame.with_columns(_rewritten=pl.when(once != pl.col("_phone0")).then(once).otherwise(twice), _fresh=fresh)
    frame = frame.with_columns(
        pl.when(pl.col("_v_phone_dropped") | pl.col("_phone_dropped_hard"))
        .then(None)
        .when("_phone_changed")
        .then("_fresh")
        .when(pl.col("_v_phone_format") | pl.col("_phone_format_hard"))
        .then("_rewritten")
        .otherwise("Phone")
        .alias("Phone")
    )
    return frame.with_columns(_did_phone_format=(pl.col("Phone") != pl.col("_phone0")) & ~pl.col("_phone_changed"))


def _vary_city(rng: np.random.Generator, frame: pl.DataFrame) -> pl.DataFrame:
    """Hard rows that keep something else moved: another city (of any country), or none written."""
    cities = _cities()
    rank = pl.Series(rng.choice(cities.height, frame.height, p=_zipf(cities.height, 8)))
    frame = frame.with_columns(_moved=rank)
    frame = frame.with_columns(
        _moved=pl.when(_get(cities["city"], pl.col("_moved")) == pl.col("City"))
        .then((pl.col("_moved") + 1) % cities.height)
        .otherwise("_moved")
    )
    moved = pl.col("_moved")
    return frame.with_columns(
        pl.when("_city_dropped")
        .then(None)
        .when("_city_changed")
        .then(_get(cities["city"], moved))
        .otherwise("City")
        .alias("City"),
        pl.when("_city_dropped")
        .then(None)
        .when("_city_changed")
        .then(_get(cities["state"], moved))
        .otherwise("State")
        .alias("State"),
        pl.when("_city_changed").then(_get(cities["country"], moved)).otherwise("Country").alias("Country"),
    )


def _vary_email(frame: pl.DataFrame) -> pl.DataFrame:
    """A new email, always: to a personal address or back, to another domain, or at the same domain another local
    part, a +tag, or dots (`_email_mode` says which); hard rows at their new company's domain."""
    # The local part follows the names, a nickname included (bob.smith@ for Bob Smith).
    first = pl.when("_v_nickname").then(pl.col("First Name")).otherwise(pl.col("_first0"))
    last, keep = pl.col("_last0"), pl.col("_keep_local")
    original = _local_key(pl.col("Email"))
    squeezed = lambda local: local.str.replace_all(r"[^a-z0-9]", "")  # noqa: E731
    digits = (pl.col("_r7") % 90 + 10).cast(pl.String)
    # The first other format whose local part is new (and, when it must be, new once punctuation is dropped).
    names = _local(first, last, pl.lit(0))
    alias = pl.concat_str(names, digits)  # no format gives one: the name and two digits, as people do
    for i in reversed(range(len(EMAIL_FORMATS))):
        local = _local(first, last, (pl.col("_r6") + i) % len(EMAIL_FORMATS))
        new = (local != pl.col("_local")) & (~pl.col("_break_local") | (squeezed(local) != original))
        alias = pl.when(new).then(local).otherwise(alias)
    dotted = (
        pl.when(pl.col("_local").str.contains(".", literal=True))
        .then(pl.col("_local").str.replace_all(".", "", literal=True))
        .when(pl.col("_local").str.contains("_", literal=True))
        .then(pl.col("_local").str.replace_all("_", ".", literal=True))
    )
    u = pl.col("_u2")
    mode = (
        pl.when("_company_changed")
        .then(pl.lit("email_new_company"))
        .when("_hard")
        .then(pl.lit("email_alias"))
        .when("_v_email_personal")
        .then(pl.lit("email_personal"))
        .when("_v_email_domain")
        .then(pl.lit("email_domain"))
        .when(keep & dotted.is_not_null() & (u < 0.5))
        .then(pl.lit("email_dots"))
        .when(keep)
        .then(pl.lit("email_tag"))
        .when(u < 0.6)
        .then(pl.lit("email_alias"))
        .when(dotted.is_not_null() & (u < 0.8))
        .then(pl.lit("email_dots"))
        .otherwise(pl.lit("email_tag"))
    )
    frame = frame.with_columns(_email_mode=mode)
    # To a personal address: the same local part mostly, or the names and two digits; to work, first.last.
    personal_local = pl.when(keep | (pl.col("_u3") < 0.6)).then("_local").otherwise(pl.concat_str(names, digits))
    to_personal = pl.concat_str(personal_local, pl.lit("@"), _get(PERSONAL_DOMAINS, pl.col("_r7") // 90 % 4))
    work_domain = pl.col("Website").str.extract(r"^https?://(?:www\.)?([^/]+)", 1)
    to_work = pl.concat_str(pl.when(keep).then(pl.col("_local")).otherwise(names), pl.lit("@"), work_domain)
    at_new = pl.when(keep).then(pl.col("_local")).otherwise(_local(first, last, pl.col("_new_format")))
    at_new = pl.when(~keep & (squeezed(at_new) == original)).then(pl.concat_str(at_new, digits)).otherwise(at_new)
    tag = _get(EMAIL_TAGS, pl.col("_r8") % len(EMAIL_TAGS))
    mode = pl.col("_email_mode")
    email = (
        pl.when(mode == "email_new_company")
        .then(pl.concat_str(at_new, pl.lit("@"), "_new_domain_of_company"))
        .when(mode == "email_personal")
        .then(pl.when("_personal").then(to_work).otherwise(to_personal))
        .when(mode == "email_domain")
        .then(pl.concat_str("_local", pl.lit("@"), _new_domain(pl.col("_domain"), pl.col("_r8") // len(EMAIL_TAGS))))
        .when(mode == "email_dots")
        .then(pl.concat_str(dotted, pl.lit("@"), "_domain"))
        .when(mode == "email_alias")
        .then(pl.concat_str(alias, pl.lit("@"), "_domain"))
        .otherwise(pl.concat_str("_local", pl.lit("+"), tag, pl.lit("@"), "_domain"))
    )
    return frame.with_columns(Email=email)


def _duplicates(rng: np.random.Generator, originals: pl.DataFrame, hard: np.ndarray) -> pl.DataFrame:
    """A true duplicate of each original (HEADERS, with _variations and _keep_local): a new email, and 1-3
    VARIATIONS; rows `hard` keep a single corroborating field (kind duplicate_one_corroboration)."""
    frame = _plan(rng, originals, hard)
    frame = _vary_names(frame)
    frame = _vary_company(rng, frame)
    frame = _vary_city(rng, frame)
    frame = _vary_phone(rng, frame)
    frame = _vary_email(frame)
    frame = frame.with_columns(
        Title=pl.when("_v_title")
        .then(_other_title(pl.col("Title"), pl.col("_r6") // len(EMAIL_FORMATS)))
        .otherwise("Title"),
        **{"External ID": pl.lit(None, pl.String)},
    )
    mode = pl.col("_email_mode")
    labels = {
        **{name: pl.col(f"_did_{name}") for name in NAME_VARIATIONS},
        "company_form": (pl.col("_v_company_form") | pl.col("_company_form_hard")) & ~pl.col("_company_changed"),
        "company_changed": pl.col("_company_changed"),
        **{m: mode == m for m in ("email_personal", "email_domain", "email_alias", "email_tag", "email_dots")},
        "email_new_company": mode == "email_new_company",
        "phone_format": pl.col("_did_phone_format").fill_null(False),
        "phone_dropped": pl.col("_v_phone_dropped") | pl.col("_phone_dropped_hard"),
        "phone_changed": pl.col("_phone_changed"),
        "city_changed": pl.col("_city_changed"),
        "city_dropped": pl.col("_city_dropped"),
        "title": pl.col("_v_title"),
    }
    # Where the local part must not corroborate (hard rows keeping another field), the one it must not equal.
    avoid = pl.when("_break_local").then(_local_key(pl.col("_local")))
    return frame.with_columns(_variations=_label_list(labels), _avoid_local=avoid).select(
        *HEADERS, "_variations", "_keep_local", "_avoid_local"
    )


def _label_list(labels: dict[str, pl.Expr]) -> pl.Expr:
    """The names whose condition holds, comma-separated, in LABEL_ORDER."""
    parts = [pl.when(labels[name].fill_null(False)).then(pl.lit(name)) for name in LABEL_ORDER if name in labels]
    return pl.concat_str(parts, separator=",", ignore_nulls=True)


def _corroborations(rows: pl.DataFrame, originals: pl.DataFrame) -> pl.DataFrame:
    """Per row, whether each corroborating field says it is the same person as the original at the same position:
    company, phone, local (the email's local part) and city, as the module docstring defines them."""
    a, b = rows.select(HEADERS), originals.select(HEADERS).rename(lambda c: f"{c}_0")
    both = pl.concat([a, b], how="horizontal")
    return both.select(
        company=_company_key(pl.col("Company Name")) == _company_key(pl.col("Company Name_0")),
        phone=(_phone_key(pl.col("Phone")) == _phone_key(pl.col("Phone_0"))).fill_null(False),
        local=_local_key(pl.col("Email")) == _local_key(pl.col("Email_0")),
        city=(pl.col("City").str.to_lowercase() == pl.col("City_0").str.to_lowercase()).fill_null(False),
    )


# ---------------------------------------------------------------------------------------------- others


def _lookalikes(rng: np.random.Generator, originals: pl.DataFrame, colleague: np.ndarray) -> pl.DataFrame:
    """People who are not the originals but resemble them (_company, Company Name, First Name, Last Name):
    rows `colleague` someone else at the same company, a third of them with the same last name; the others the
    same first and last name at another company. Conflicts are left to _separate."""
    n = originals.height
    drawn = _draw_people(rng, n)
    ids = _company_ids()
    same_company = originals["Company Name"].replace_strict(ids, return_dtype=pl.Int64)
    same_last = colleague & (rng.random(n) < 1 / 3)
    # A namesake works elsewhere: another company than the original's.
    elsewhere = drawn["_company"]
    elsewhere = pl.select(
        pl.when(elsewhere == same_company).then((elsewhere + 1) % _companies().height).otherwise(elsewhere)
    ).to_series()
    rank = pl.select(pl.when(pl.Series(colleague)).then(same_company).otherwise(elsewhere)).to_series()
    return pl.DataFrame(
        {
            "_company": rank,
            "Company Name": _companies()["name"].gather(rank),
            "First Name": pl.select(
                pl.when(pl.Series(colleague)).then(drawn["First Name"]).otherwise(originals["First Name"])
            ).to_series(),
            "Last Name": pl.select(
                pl.when(pl.Series(colleague & ~same_last)).then(drawn["Last Name"]).otherwise(originals["Last Name"])
            ).to_series(),
        }
    )


def _resemble(
    rng: np.random.Generator, rows: pl.DataFrame, originals: pl.DataFrame, colleague: np.ndarray
) -> pl.DataFrame:
    """Hard non-duplicates made to resemble their originals more: a colleague often in the same city (70%), at
    times on the company's switchboard (10%, the same number), at times with the company written otherwise (20%);
    a namesake never in the original's city. With _variations: what each shares with its original."""
    n = rows.height
    cities = _cities()
    u = rng.random((n, 3))
    col = pl.lit(pl.Series(colleague))
    orig = originals.select(HEADERS).rename(lambda c: f"{c}_0")
    frame = pl.concat([rows, orig], how="horizontal").with_columns(**_random(rng, n, "_r", "_r2", "_r3"))
    same_city = col & pl.lit(pl.Series(u[:, 0] < 0.7)) & pl.col("City_0").is_not_null()
    switchboard = col & pl.lit(pl.Series(u[:, 1] < 0.1)) & pl.col("Phone_0").is_not_null()
    other_form = col & pl.lit(pl.Series(u[:, 2] < 0.2))
    nsn = _national_of(pl.col("Phone_0"), pl.col("Country_0"))
    frame = frame.with_columns(_nsn=nsn)
    rewritten = _write_phones(frame["_nsn"], frame["Country_0"], rng.integers(0, 1 << 30, n))
    moved = pl.col("_r") % cities.height
    moved = pl.when(_get(cities["city"], moved) == pl.col("City_0")).then((moved + 1) % cities.height).otherwise(moved)
    clash = ~col & (pl.col("City") == pl.col("City_0")).fill_null(False)
    frame = frame.with_columns(
        pl.when(other_form)
        .then(_company_variant(pl.col("Company Name"), pl.col("_r2") % 4, pl.col("_r3") % 2))
        .otherwise("Company Name")
        .alias("Company Name"),
        pl.when(same_city).then("City_0").when(clash).then(_get(cities["city"], moved)).otherwise("City").alias("City"),
        pl.when(same_city)
        .then("State_0")
        .when(clash)
        .then(_get(cities["state"], moved))
        .otherwise("State")
        .alias("State"),
        pl.when(same_city)
        .then("Country_0")
        .when(clash)
        .then(_get(cities["country"], moved))
        .otherwise("Country")
        .alias("Country"),
        pl.when(switchboard).then(pl.lit(rewritten)).otherwise("Phone").alias("Phone"),
        _other_form=other_form,
    )
    work_domain = pl.col("Website_0").str.extract(r"^https?://(?:www\.)?([^/]+)", 1)
    labels = {
        "company_form": pl.col("_other_form"),
        "same_last_name": col & (pl.col("Last Name") == pl.col("Last Name_0")),
        "same_name": ~col,
        "same_domain": pl.col("Email").str.extract(r"@(.*)$", 1) == work_domain,
        "same_city": (pl.col("City").str.to_lowercase() == pl.col("City_0").str.to_lowercase()),
        "same_phone": _phone_key(pl.col("Phone")) == _phone_key(pl.col("Phone_0")),
        "same_local": _local_key(pl.col("Email")) == _local_key(pl.col("Email_0")),
    }
    return frame.with_columns(_variations=_label_list(labels)).select(*HEADERS, "_variations")


def _counts(rows: int, duplicate_rate: float, hard_negative_rate: float) -> dict[str, int]:
    """How many incoming rows of each kind."""
    if rows < 0 or not (duplicate_rate >= 0 and hard_negative_rate >= 0 and duplicate_rate + hard_negative_rate <= 1):
        raise ValueError("rows must be >= 0; duplicate_rate and hard_negative_rate >= 0, adding up to at most 1")
    duplicates, hard_negatives = round(rows * duplicate_rate), round(rows * hard_negative_rate)
    hard_positives = round(duplicates * HARD_POSITIVE_SHARE)
    return {
        "duplicate": duplicates - hard_positives,
        "duplicate_one_corroboration": hard_positives,
        "same_company_other_person": hard_negatives - hard_negatives // 2,
        "same_name_other_company": hard_negatives // 2,
        "new": rows - duplicates - hard_negatives,
    }


def incoming_rows(
    existing: pl.DataFrame, rows: int, seed: int, duplicate_rate: float = 0.2, hard_negative_rate: float = 0.1
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`rows` rows to import after `existing` (from existing_leads, or its CSV read as strings), and their labels:
    source_row (the row's line in the CSV with its header), kind (KINDS), original_email (the Email of the
    existing lead a duplicate repeats, else null), variations (what was changed, or what a hard non-duplicate
    shares with the lead it resembles) and resembles_email (that lead's Email, for hard non-duplicates)."""
    counts = _counts(rows, duplicate_rate, hard_negative_rate)
    duplicates = counts["duplicate"] + counts["duplicate_one_corroboration"]
    if duplicates > existing.height or (rows > counts["new"] and not existing.height):
        raise ValueError(f"{rows - counts['new']} duplicates and lookalikes asked of {existing.height} existing leads")
    rng = np.random.default_rng([seed, 2])
    existing = existing.select(HEADERS)
    # True duplicates: of distinct leads, the first ones hard.
    originals = existing[rng.choice(existing.height, duplicates, replace=False)]
    hard = np.arange(duplicates) < counts["duplicate_one_corroboration"]
    twins = _duplicates(rng, originals, hard)

    # Everyone else at once, so that no two of them (nor any of them and an existing lead) are the same person.
    colleagues, namesakes = counts["same_company_other_person"], counts["same_name_other_company"]
    known = _keys(existing)
    # A namesake has a common name: leads are drawn in proportion to how many have their first and last name.
    share = known.select(pl.len().over("first", "last")).to_series().to_numpy().astype(float)
    namesake_of = rng.choice(existing.height, namesakes, p=share / share.sum()) if namesakes else np.zeros(0, np.int64)
    resembled = existing[np.concatenate([rng.choice(existing.height, colleagues), namesake_of])]
    colleague = np.arange(colleagues + namesakes) < colleagues
    others = pl.concat([_lookalikes(rng, resembled, colleague), _draw_people(rng, counts["new"])])
    avoid = pl.concat([resembled["First Name"], pl.Series([None] * counts["new"], dtype=pl.String)])
    # A colleague is someone else (another first name); a namesake keeps the name and changes company.
    by_company = np.concatenate([~colleague, np.zeros(counts["new"], dtype=bool)])
    avoid = pl.select(pl.when(pl.Series(by_company)).then(None).otherwise(avoid)).to_series()
    same_company = np.concatenate([colleague, np.zeros(counts["new"], dtype=bool)])
    others = _separate(rng, others, known, by_company, same_company, avoid)
    others = _fill(rng, others, pl.Series([None] * others.height, dtype=pl.String))
    others = others.with_columns(
        pl.when(pl.Series(rng.random(others.height) < 0.5))
        .then(pl.format("I{}-{}", pl.lit(seed), pl.int_range(others.height, dtype=pl.Int64)))
        .alias("External ID")
    )
    lookalike = others.head(colleagues + namesakes)
    lookalike = _resemble(rng, lookalike, resembled, colleague)
    new = others.tail(counts["new"]).select(HEADERS).with_columns(_variations=pl.lit(""))

    kinds = np.array(KINDS)[
        np.concatenate([np.where(hard, 1, 0), np.where(colleague, 2, 3), np.full(counts["new"], 4)])
    ]
    frame = pl.concat(
        [
            twins.with_columns(_original=originals["Email"], _resembles=pl.lit(None, pl.String)),
            lookalike.with_columns(
                _keep_local=pl.lit(False),
                _avoid_local=pl.lit(None, pl.String),
                _original=pl.lit(None, pl.String),
                _resembles=resembled["Email"],
            ),
            new.with_columns(
                _keep_local=pl.lit(False),
                _avoid_local=pl.lit(None, pl.String),
                _original=pl.lit(None, pl.String),
                _resembles=pl.lit(None, pl.String),
            ),
        ]
    ).with_columns(_kind=pl.Series(kinds), _i=pl.int_range(rows, dtype=pl.Int64))
    frame = frame.with_columns(
        _unique_emails(frame["Email"], existing["Email"], frame["_keep_local"], frame["_avoid_local"])
    )

    # The rule for true duplicates, checked on what was written (emails numbered to be unique included).
    found = _corroborations(frame.head(duplicates), originals).select(n=pl.sum_horizontal(pl.all()))["n"]
    broken = (found < 2) & ~pl.Series(hard) | (found != 1) & pl.Series(hard)
    if broken.any():
        raise RuntimeError(f"{int(broken.sum())} duplicates break the corroboration rule")

    frame = frame[rng.permutation(rows)]
    labels = frame.select(
        source_row=pl.int_range(2, rows + 2, dtype=pl.Int64),
        kind="_kind",
        original_email="_original",
        variations="_variations",
        resembles_email="_resembles",
    )
    return frame.select(HEADERS), labels


# ---------------------------------------------------------------------------------------------- evaluation


def evaluate(labels: pl.DataFrame, predictions: pl.DataFrame) -> dict:
    """Precision and recall of a detector's predictions (source_row, candidate_email, band: flagged or review)
    against `labels`, per band and for both together, with review_share (review predictions / incoming rows)
    and per kind how many rows of it were predicted in each band. A prediction is correct when its candidate is
    the row's original (lower case); recall counts each true duplicate found once, over every duplicate kind.
    Precision is None without predictions."""
    truth = labels.select("source_row", "kind", pl.col("original_email").str.strip_chars().str.to_lowercase())
    judged = predictions.select(
        pl.col("source_row").cast(pl.Int64), pl.col("candidate_email").str.strip_chars().str.to_lowercase(), "band"
    ).join(truth.with_columns(pl.col("source_row").cast(pl.Int64)), on="source_row", how="left")
    judged = judged.with_columns(
        correct=(pl.col("candidate_email") == pl.col("original_email")).fill_null(False),
        kind=pl.col("kind").fill_null("unknown"),
    )
    positives = truth.filter(pl.col("kind").is_in(DUPLICATE_KINDS)).height

    def score(part: pl.DataFrame) -> dict:
        predicted = part.height
        correct = part.filter("correct")["source_row"].n_unique()
        return {
            "predicted": predicted,
            "correct": correct,
            "precision": round(correct / predicted, 4) if predicted else None,
            "recall": round(correct / positives, 4) if positives else None,
        }

    by_kind: dict[str, dict[str, int]] = {}
    for kind in [*KINDS, *sorted(set(judged["kind"]) - set(KINDS))]:
        of_kind = judged.filter(pl.col("kind") == kind)
        by_kind[kind] = {"rows": truth.filter(pl.col("kind") == kind).height}
        for band in BANDS:
            in_band = of_kind.filter(pl.col("band") == band)
            by_kind[kind][band] = in_band.height
            if kind in DUPLICATE_KINDS:
                by_kind[kind][f"{band}_correct"] = in_band.filter("correct")["source_row"].n_unique()
    review = judged.filter(pl.col("band") == "review").height
    return {
        "incoming_rows": labels.height,
        "true_duplicates": positives,
        **{band: score(judged.filter(pl.col("band") == band)) for band in BANDS},
        "flagged_or_review": score(judged.filter(pl.col("band").is_in(BANDS))),
        "review_share": round(review / labels.height, 4) if labels.height else 0.0,
        "by_kind": by_kind,
    }


def _label_counts(labels: pl.DataFrame) -> dict:
    """How many rows of each kind, and how often each variation (or shared field) appears."""
    kinds = dict(labels.group_by("kind").len().iter_rows())
    variations = labels.select(pl.col("variations").str.split(",").explode()).filter(pl.col("variations") != "")
    return {
        "kinds": {kind: kinds.get(kind, 0) for kind in KINDS},
        "variations": dict(sorted(variations.group_by("variations").len().iter_rows(), key=lambda kv: -kv[1])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--existing", type=int, required=True)
    parser.add_argument("--incoming", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duplicate-rate", type=float, default=0.2)
    parser.add_argument("--hard-negative-rate", type=float, default=0.1)
    args = parser.parse_args()

    existing = existing_leads(args.existing, args.seed)
    incoming, labels = incoming_rows(existing, args.incoming, args.seed, args.duplicate_rate, args.hard_negative_rate)
    args.out.mkdir(parents=True, exist_ok=True)
    existing.write_csv(args.out / "existing.csv")
    incoming.write_csv(args.out / "incoming.csv")
    labels.write_csv(args.out / "labels.csv")
    print(json.dumps({"existing": existing.height, "incoming": incoming.height, **_label_counts(labels)}))


if __name__ == "__main__":
    main()
