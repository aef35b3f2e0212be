"""Import names whose distribution on the package index has another name.

The left side is the top-level module a script imports, the right side what
``pip install`` wants. Only names that differ are listed: everything else is
installed under its import name. Kept by hand, like Windmill's exception map;
add a line when a user reports a wrong guess (a ``# extra_requirements:``
line fixes one script meanwhile).
"""

from __future__ import annotations

IMPORT_TO_DISTRIBUTION: dict[str, str] = {
    "attr": "attrs",
    "bs4": "beautifulsoup4",
    "cv2": "opencv-python",
    "dateutil": "python-dateutil",
    "docx": "python-docx",
    "dotenv": "python-dotenv",
    "fitz": "pymupdf",
    "gi": "pygobject",
    "google.protobuf": "protobuf",
    "git": "gitpython",
    "google.cloud.bigquery": "google-cloud-bigquery",
    "google.cloud.storage": "google-cloud-storage",
    "googleapiclient": "google-api-python-client",
    "jose": "python-jose",
    "jwt": "pyjwt",
    "kafka": "kafka-python",
    "ldap": "python-ldap",
    "magic": "python-magic",
    "MySQLdb": "mysqlclient",
    "nacl": "pynacl",
    "OpenSSL": "pyopenssl",
    "PIL": "pillow",
    "pptx": "python-pptx",
    "psycopg2": "psycopg2-binary",
    "Crypto": "pycryptodome",
    "serial": "pyserial",
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
    "slugify": "python-slugify",
    "snowflake": "snowflake-connector-python",
    "telegram": "python-telegram-bot",
    "usb": "pyusb",
    "win32api": "pywin32",
    "yaml": "pyyaml",
    "zmq": "pyzmq",
}

# Modules that every job can import without installing anything: ours.
PROVIDED = frozenset({"gristmill"})
