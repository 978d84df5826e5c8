/* addr: socket addresses as text, for logs and the fault log. */
#ifndef FL_ADDR_H
#define FL_ADDR_H

struct sockaddr;

/* Formats a socket address as "1.2.3.4:80" or "[::1]:80" into buf (len
 * bytes; 48 is always enough); returns buf. */
char *fl_addr_str(const struct sockaddr *sa, char *buf, unsigned len);

#endif
