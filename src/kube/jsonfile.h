/* jsonfile: a YAML document as a jansson value (mappings as objects,
 * sequences as arrays, every scalar a string), for kubeconfig files. */
#ifndef FL_KUBE_JSONFILE_H
#define FL_KUBE_JSONFILE_H

#include <jansson.h>
#include <stddef.h>

/* Returns a new reference, or NULL with err set (line:col: problem). */
json_t *fl_yaml_to_json(const char *buf, size_t len, char *err, size_t errlen);

#endif
