# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared-library resolution as glibc's loader does it, without running anything.

- ``parsing``: ELF headers, PT_INTERP and PT_DYNAMIC through program headers (pyelftools);
- ``search``: ld.so.conf, default directories, paths inside a root;
- ``resolver``: the breadth-first DT_NEEDED closure with ld.so's search order.

The names below are the package's API (wasmedge_plugin_deps, the tests and the benchmark use them).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.edgewasm.llamaedge.plugins.module_utils.elf.parsing import (  # noqa: F401
    ELFTOOLS_IMPORT_ERROR,
    HAS_ELFTOOLS,
    ElfObject,
    Header,
    ResolverError,
)
from ansible_collections.edgewasm.llamaedge.plugins.module_utils.elf.resolver import (  # noqa: F401
    Resolution,
    Resolver,
    format_tree,
)
from ansible_collections.edgewasm.llamaedge.plugins.module_utils.elf.search import (  # noqa: F401
    MAX_CONF_FILES,
    FileSystem,
    parse_ld_so_conf,
)
