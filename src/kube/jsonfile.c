/* jsonfile: see jsonfile.h. */
#include "jsonfile.h"

#include <stdio.h>
#include <yaml.h>

static json_t *conv(yaml_document_t *d, yaml_node_t *n, int depth)
{
    if (!n || depth > 64)
        return NULL;
    switch (n->type) {
    case YAML_SCALAR_NODE:
        return json_stringn((const char *)n->data.scalar.value, n->data.scalar.length);
    case YAML_SEQUENCE_NODE: {
        json_t *a = json_array();
        for (yaml_node_item_t *it = n->data.sequence.items.start;
             a && it < n->data.sequence.items.top; it++) {
            json_t *v = conv(d, yaml_document_get_node(d, *it), depth + 1);
            if (v)
                json_array_append_new(a, v);
        }
        return a;
    }
    case YAML_MAPPING_NODE: {
        json_t *o = json_object();
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start;
             o && p < n->data.mapping.pairs.top; p++) {
            yaml_node_t *k = yaml_document_get_node(d, p->key);
            if (!k || k->type != YAML_SCALAR_NODE)
                continue;
            json_t *v = conv(d, yaml_document_get_node(d, p->value), depth + 1);
            if (v)
                json_object_setn_new(o, (const char *)k->data.scalar.value,
                                     k->data.scalar.length, v);
        }
        return o;
    }
    default:
        return NULL;
    }
}

json_t *fl_yaml_to_json(const char *buf, size_t len, char *err, size_t errlen)
{
    yaml_parser_t p;
    yaml_document_t d;
    json_t *out = NULL;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
    if (!yaml_parser_load(&p, &d)) {
        snprintf(err, errlen, "%zu:%zu: %s", p.problem_mark.line + 1, p.problem_mark.column + 1,
                 p.problem ? p.problem : "syntax error");
        yaml_parser_delete(&p);
        return NULL;
    }
    out = conv(&d, yaml_document_get_root_node(&d), 0);
    if (!out)
        snprintf(err, errlen, "the document is empty");
    yaml_document_delete(&d);
    yaml_parser_delete(&p);
    return out;
}
