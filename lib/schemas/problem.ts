/** RFC 7807 problem documents: the one error shape of the API. */
import Type, { type Static } from 'typebox';

export const FieldErrorSchema = Type.Object({
  field: Type.String(),
  message: Type.String(),
});
export type FieldError = Static<typeof FieldErrorSchema>;

export const ProblemSchema = Type.Object({
  type: Type.String(),
  title: Type.String(),
  status: Type.Integer(),
  detail: Type.String(),
  errors: Type.Optional(Type.Array(FieldErrorSchema)),
});
export type Problem = Static<typeof ProblemSchema>;
