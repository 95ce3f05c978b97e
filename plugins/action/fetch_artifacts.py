# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""fetch_artifacts runs where the artifact cache is: the controller, inside Ansible's own process.

As a module it costs a module transfer and an interpreter start per call (about 0.6 s on our lab, once per
role and play); the work is the same (module_utils/release_fetch.run), so the result and the messages are
identical.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleActionFail
from ansible.module_utils.urls import open_url
from ansible.plugins.action import ActionBase

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import release_fetch


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp  # nothing is transferred
        # A failure is returned as a result (failed, msg), never raised: ansible-core 2.16 would print a
        # bogus "exception occurred" line for a raised AnsibleActionFail.
        try:
            _validation, params = self.validate_argument_spec(argument_spec=release_fetch.ARGUMENT_SPEC)
            result.update(release_fetch.run(params, open_url, check_mode=bool(self._play_context.check_mode)))
        except AnsibleActionFail as exc:
            result.update(failed=True, msg=str(exc))
        except release_fetch.FetchError as exc:
            result.update(failed=True, msg=str(exc))
        return result
