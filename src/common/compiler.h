/* compiler: the attributes every module uses, spelled once. */
#ifndef FL_COMPILER_H
#define FL_COMPILER_H

/* Functions that can fail return 0 or a negative errno; ignoring that is a bug
 * the compiler should report. */
#define FL_WUR __attribute__((warn_unused_result))

#endif
