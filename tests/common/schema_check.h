/*
 * schema_check.h - an independent JSON schema validator for the subset that
 * core/json_grammar.h supports, for tests: it checks generated output the
 * way a client would, from the schema text, without the grammar's code.
 */
#ifndef TESTS_SCHEMA_CHECK_H
#define TESTS_SCHEMA_CHECK_H

/* 1 when text parses as JSON and validates against schema (JSON text);
 * 0 otherwise, with the reason in why (may be NULL). */
int sc_validate(const char *schema, const char *text, char *why, int whylen);

#endif
