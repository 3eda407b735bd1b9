/** The version of the provider specification a platform implements. */
export type SpecificationVersion = 'v2';
